"""SQLite-only journal tests: pragmas, locking, errors that name the file, the injected clock.

The state machine itself (B1-B12) is in the journal contract (test_journal_contract.py), run on every backend.
ACCEPTANCE ids here: B13 (open-time pragmas, BEGIN IMMEDIATE, a reader process
never sees SQLITE_BUSY), B14 (one node per file), E7/E8 (errors that name the
file), E9 (checkpoints under a reader that never stops), B1/B8 with the injected clock.

Time is an injected clock, never a sleep; nothing here asserts a timing.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Iterator

import pytest
from journal_support import expire, job_in_every_state, lease_one, new_job, reclaim, reclaim_all, state

from actorq.errors import JournalError, JournalLocked
from actorq.journal import Failure, JobState, NewJob, SQLiteJournal, migrate
from actorq.journal.protocol import Attempt, TaskDefaults
from actorq.journal.sqlite import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db_path: Path, clock: Clock) -> Iterator[SQLiteJournal]:
    j = SQLiteJournal(db_path, clock=clock)
    yield j
    j.close()


# -- the injected clock (SQLite compares times in the process; PostgreSQL in the server) --------


def test_b1_injected_clock_decides_ready_or_scheduled(journal: SQLiteJournal, clock: Clock) -> None:
    assert journal.enqueue([
        new_job("now"),
        new_job("past", run_at=T0 - 5),
        new_job("due-exactly", run_at=T0),
        new_job("future", run_at=T0 + 60),
    ]) == 4
    assert state(journal, "now") is JobState.READY
    assert state(journal, "past") is JobState.READY
    assert state(journal, "due-exactly") is JobState.READY
    assert state(journal, "future") is JobState.SCHEDULED
    info = journal.get("future")
    assert info is not None
    assert (info.attempts, info.max_attempts, info.run_at, info.lease_owner, info.errors) == (0, 3, T0 + 60, None, [])
    assert journal.counts() == {"q": {"ready": 3, "scheduled": 1}}
    assert journal.get("no-such-job") is None


def test_b8_expiry_and_renew_use_the_injected_clock(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a")])
    job = lease_one(journal, "w1", lease_for=30.0)  # expires at T0 + 30
    clock.now = T0 + 20
    assert journal.expired() == []
    assert journal.renew(["w1"], 30.0) == 1  # now expires at T0 + 50
    clock.now = T0 + 45
    assert journal.expired() == []
    assert state(journal, "a") is JobState.LEASED
    clock.now = T0 + 51
    assert journal.expired() == [Attempt("a", job.lease_id, "tests.noop", 1, 3)]
    assert expire(journal) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.errors) == (JobState.READY, 1, ["lease expired"])
    assert journal.renew([], 30.0) == 0


def test_a_unique_period_runs_from_the_insert_by_the_injected_clock(journal: SQLiteJournal, clock: Clock,
                                                                    db_path: Path) -> None:
    def keyed(job_id: str, unique_for: float | None = 60.0) -> NewJob:
        return NewJob(job_id, "q", "t", b"\x92\x90\x80", unique_key="k", unique_for=unique_for)

    assert journal.enqueue([keyed("a")]) == 1  # holds "k" until T0 + 60, finished or not
    (job,) = journal.lease(["q"], "w1", 1, 30.0)
    clock.now = T0 + 10
    assert journal.complete([(job.id, job.lease_id)]) == 1
    clock.now = T0 + 59.999
    assert journal.enqueue([keyed("b"), keyed("c", None)]) == 0
    assert journal.holders(["k"]) == {"k": "a"}
    clock.now = T0 + 60  # the period is [insert, insert + unique_for): over at its end
    assert journal.holders(["k"]) == {}
    assert journal.enqueue([keyed("d", 5.0)]) == 1
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT id, created_at, unique_until FROM actorq_jobs ORDER BY id").fetchall() == [
            ("a", T0, T0 + 60), ("d", T0 + 60, T0 + 65)]


def test_fail_times_final_states_by_the_injected_clock(journal: SQLiteJournal, clock: Clock, db_path: Path) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    a, b = sorted(journal.lease(["q"], "w1", 2, 30.0))
    clock.now = T0 + 7
    assert journal.fail([Failure(a.id, a.lease_id, "gave up", JobState.FAILED),
                         Failure(b.id, b.lease_id, "boom", JobState.RETRY, T0 + 60)]) == 2
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT id, finished_at, run_at FROM actorq_jobs ORDER BY id").fetchall() == [
            ("a", T0 + 7, T0), ("b", None, T0 + 60)]
        assert raw.execute("SELECT job_id, attempt, at, error FROM actorq_errors ORDER BY job_id").fetchall() == [
            ("a", 1, T0 + 7, "gave up"), ("b", 1, T0 + 7, "boom")]


# -- B13: pragmas, BEGIN IMMEDIATE, a concurrent reader process ---------------------------


@pytest.mark.parametrize(("level", "code"), [("full", 2), ("normal", 1), ("extra", 3)])
def test_b13_pragmas_read_back_after_open(db_path: Path, level: str, code: int) -> None:
    j = SQLiteJournal(db_path, synchronous=level, busy_timeout=2.5)
    try:
        assert j.pragma("journal_mode") == "wal"
        assert j.pragma("synchronous") == code
        assert j.pragma("busy_timeout") == 2500
    finally:
        j.close()
    j = SQLiteJournal(db_path)
    try:
        assert j.pragma("synchronous") == 2  # the documented default is FULL
        assert j.pragma("busy_timeout") > 0
    finally:
        j.close()
    with pytest.raises(ValueError):
        SQLiteJournal(db_path, synchronous="off")


def test_b13_every_write_transaction_is_begin_immediate(journal: SQLiteJournal, clock: Clock) -> None:
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)  # observe the real statements sent
    try:
        job_in_every_state(journal)
        reclaim(journal, "w1", "worker died")
        reclaim_all(journal, "takeover")
        expire(journal)
        journal.renew(["w1"], 10.0)
        journal.promote()
        journal.retry_dead("dead")
        journal.release([("x", 1)])
    finally:
        journal._conn.set_trace_callback(None)
    begins = [s.strip().upper() for s in statements if s.strip().upper().startswith("BEGIN")]
    assert begins, "no transaction was traced"
    assert set(begins) == {"BEGIN IMMEDIATE"}
    writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes


READER = textwrap.dedent("""
    import json, sqlite3, sys
    path, target = sys.argv[1], int(sys.argv[2])
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0, isolation_level=None)
    reads = busy = 0
    seen = set()
    announced = False
    while True:
        try:
            (n,) = conn.execute("SELECT count(*) FROM actorq_jobs").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
                busy += 1
                if busy > 1000:
                    break
                continue
            raise
        reads += 1
        seen.add(n)
        if not announced:
            print("reading", flush=True)
            announced = True
        if n >= target:
            break
    print(json.dumps({"reads": reads, "busy": busy, "distinct": len(seen)}), flush=True)
""")


def test_b13_reader_process_never_sees_sqlite_busy(journal: SQLiteJournal, db_path: Path) -> None:
    """A reader in another process, with *no* busy timeout, reads while we commit 300 transactions.

    The payloads push the WAL past SQLite's 1,000-page auto-checkpoint, so the reader
    also runs across checkpoints.
    """
    transactions, per_tx = 300, 5
    payload = os.urandom(3000)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db_path), str(transactions * per_tx)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "reading", reader.stderr.read() if reader.stderr else ""
        for t in range(transactions):  # the reader is running: every commit overlaps its reads
            assert journal.enqueue([new_job(f"t{t:04d}-{k}", payload=payload) for k in range(per_tx)]) == per_tx
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    print("reader:", result, "wal bytes:", Path(f"{db_path}-wal").stat().st_size)
    assert result["busy"] == 0
    assert result["reads"] >= 2 and result["distinct"] >= 2  # it saw the writes land


LOOPING_READER = textwrap.dedent("""
    import os, sqlite3, sys
    path, stop = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    reads = 0
    while not os.path.exists(stop):  # one short read transaction after another, never idle
        conn.execute("SELECT count(*), max(id) FROM actorq_jobs").fetchone()
        reads += 1
        if reads == 1:
            print("reading", flush=True)
    print(reads, flush=True)
""")


def test_e9_maintain_restarts_the_wal_while_a_reader_keeps_reading(db_path: Path) -> None:
    """E9: with a reader always inside some read transaction, automatic (passive) checkpoints
    cannot start the WAL over; past ``wal_limit_mb``, `maintain()` waits for the readers
    between reads and does (a TRUNCATE checkpoint)."""
    journal = SQLiteJournal(db_path, wal_limit_mb=0.5)
    stop = db_path.parent / "stop-reading"
    reader = subprocess.Popen([sys.executable, "-c", LOOPING_READER, str(db_path), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wal = Path(f"{db_path}-wal")
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        assert journal.maintain() is None  # within the limit: nothing to do
        payload = os.urandom(3000)
        sizes, summaries = [], []
        for round_ in range(3):
            for t in range(100):
                journal.enqueue([new_job(f"r{round_}-{t:03d}-{k}", payload=payload) for k in range(3)])
            sizes.append(wal.stat().st_size)
            for _ in range(10):  # the reader never idles: "busy" means "try again later", as documented
                summary = journal.maintain()
                assert summary is not None and summary.startswith(f"WAL was {sizes[-1] / 1e6:.1f} MB: ")
                summaries.append(summary)
                if summary.endswith("checkpointed, restarted"):
                    break
            assert summaries[-1].endswith(": checkpointed, restarted"), summaries
            assert wal.stat().st_size == 0  # truncated: the WAL starts over
            assert journal.maintain() is None
        stop.touch()
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        journal.close()
    assert reader.returncode == 0, err
    print("wal bytes before each checkpoint:", sizes, "reads:", out.strip(), summaries)
    assert min(sizes) > 0.5 * 1024 * 1024


def test_checkpoint_and_maintain_refuse_to_run_inside_a_transaction(journal: SQLiteJournal) -> None:
    with pytest.raises(ValueError):
        journal.checkpoint("sideways")
    for run in (journal.checkpoint, journal.maintain):
        with pytest.raises(JournalError, match="inside a transaction"):
            with journal.transaction():
                run()
    assert journal.checkpoint("passive")[0] == 0


# -- B14: one node per file ----------------------------------------------------------------


def test_b14_second_attach_node_on_the_same_file_is_refused(db_path: Path) -> None:
    first = SQLiteJournal(db_path)
    second = SQLiteJournal(db_path)
    try:
        first.attach_node()
        first.attach_node()  # idempotent for the holder
        with pytest.raises(JournalLocked) as info:
            second.attach_node()
        assert str(db_path) in str(info.value)
        assert isinstance(info.value, JournalError)
        first.close()  # closing releases the node lock
        second.attach_node()
    finally:
        first.close()
        second.close()


CHILD_ATTACH = textwrap.dedent("""
    import sys
    from actorq.errors import JournalLocked
    from actorq.journal import SQLiteJournal
    journal = SQLiteJournal(sys.argv[1])
    try:
        journal.attach_node()
    except JournalLocked as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    print("ATTACHED", flush=True)
    sys.stdin.read()  # hold the lock until the parent says so (or kills us)
""")


def test_b14_attach_node_from_another_process_is_refused(db_path: Path) -> None:
    holder = SQLiteJournal(db_path)
    try:
        holder.attach_node()
        child = subprocess.run([sys.executable, "-c", CHILD_ATTACH, str(db_path)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 3, child.stderr
        assert child.stdout.startswith("LOCKED") and str(db_path) in child.stdout
    finally:
        holder.close()


def test_b14_lock_is_released_when_the_holding_process_dies(db_path: Path) -> None:
    SQLiteJournal(db_path).close()  # create the schema first
    child = subprocess.Popen([sys.executable, "-c", CHILD_ATTACH, str(db_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = SQLiteJournal(db_path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ATTACHED"
        with pytest.raises(JournalLocked):
            journal.attach_node()
        child.kill()  # SIGKILL: no cleanup runs in the child
        child.wait(timeout=30)
        journal.attach_node()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        journal.close()


# -- E11: the node lock follows the real file, however its path is spelled ------------------------
def _spelling(kind: str, db_path: Path) -> str:
    """Another path to `db_path`'s file: a symlink to it, a symlinked directory, ``sub/..``, relative."""
    if kind == "symlink":
        link = db_path.with_name("link.db")
        link.symlink_to(db_path)
        return str(link)
    if kind == "symlinked directory":
        alias = db_path.parent.parent / f"{db_path.parent.name}-alias"
        alias.symlink_to(db_path.parent, target_is_directory=True)
        return str(alias / db_path.name)
    if kind == "dot-dot":
        (db_path.parent / "sub").mkdir()
        return str(db_path.parent / "sub" / ".." / db_path.name)
    assert kind == "relative"
    return os.path.relpath(db_path)


@pytest.mark.parametrize("kind", ["symlink", "symlinked directory", "dot-dot", "relative"])
def test_e11_another_spelling_of_the_path_takes_the_same_node_lock(db_path: Path, kind: str) -> None:
    first = SQLiteJournal(db_path)
    other = SQLiteJournal(_spelling(kind, db_path))
    try:
        first.attach_node()
        with pytest.raises(JournalLocked, match="another node is running"):
            other.attach_node()
        first.close()
        other.attach_node()  # the lock, not the spelling, decides
        with pytest.raises(JournalLocked):
            SQLiteJournal(db_path).attach_node()
    finally:
        first.close()
        other.close()
    assert sorted(p.name for p in db_path.parent.glob("*.lock")) == ["journal.db.lock"]


def test_e11_a_node_in_another_process_through_a_symlink_is_refused(db_path: Path) -> None:
    holder = SQLiteJournal(db_path)
    try:
        holder.attach_node()
        child = subprocess.run([sys.executable, "-c", CHILD_ATTACH, _spelling("symlink", db_path)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 3, child.stderr
        assert child.stdout.startswith("LOCKED")
    finally:
        holder.close()


# -- errors that name the file: schema version, not a database, E8 permissions ---------------


def test_a_version_2_journal_upgrades_to_the_task_catalog_and_keeps_its_jobs(db_path: Path) -> None:
    raw = sqlite3.connect(db_path, isolation_level=None)
    for version in (1, 2):  # a file as the previous actorq left it
        for statement in (resources.files("actorq.journal") / f"sql/sqlite_v{version}.sql").read_text().split(";"):
            if statement.strip():
                raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("INSERT INTO actorq_jobs (id, queue, task, payload, state, run_at, max_attempts, created_at,"
                " unique_key) VALUES ('old', 'q', 't', x'929080', 'ready', 0, 3, 0, 'k')")
    raw.close()
    journal = SQLiteJournal(db_path)
    try:
        assert journal.applied_versions == list(range(3, SCHEMA_VERSION + 1))
        assert journal.pragma("user_version") == SCHEMA_VERSION
        assert state(journal, "old") is JobState.READY and journal.holders(["k"]) == {"k": "old"}
        journal.declare_tasks([TaskDefaults("t", "q", 1, 2)])
        assert journal.declared_tasks(["t"]) == {"t": TaskDefaults("t", "q", 1, 2)}
    finally:
        journal.close()
    again = SQLiteJournal(db_path)
    assert again.applied_versions == []  # up to date: nothing more to apply
    again.close()
    assert migrate(f"sqlite:///{db_path}") == []


def test_newer_schema_version_is_refused_naming_the_path(db_path: Path) -> None:
    SQLiteJournal(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(JournalError) as info:
        SQLiteJournal(db_path)
    assert str(db_path) in str(info.value) and "99" in str(info.value)


def test_e7_a_file_that_is_not_a_database_is_refused_naming_the_path(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(JournalError) as info:
        SQLiteJournal(db_path)
    assert str(db_path) in str(info.value)


E8_CHILD = textwrap.dedent("""
    import ctypes, json, os, sys

    def drop_dac_override():
        # Root passes every permission check through CAP_DAC_OVERRIDE (and friends).
        # Drop them from this process only, so the file modes apply to us as to anyone.
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        if libc.capget(ctypes.byref(header), data) != 0:
            return False
        mask = ~((1 << 1) | (1 << 2) | (1 << 3)) & 0xFFFFFFFF  # DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
        data[0].effective &= mask
        data[0].permitted &= mask
        return libc.capset(ctypes.byref(header), data) == 0

    if os.geteuid() == 0 and not drop_dac_override():
        print(json.dumps({"skip": "running as root and could not drop CAP_DAC_OVERRIDE"}))
        sys.exit(0)
    probe = sys.argv[1]
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
        print(json.dumps({"skip": f"{probe}: a read-only directory is still writable here"}))
        sys.exit(0)
    except PermissionError:
        pass

    from actorq.errors import JournalError
    from actorq.journal import NewJob, SQLiteJournal
    results = {}
    for path in sys.argv[2:]:
        try:
            journal = SQLiteJournal(path)
        except JournalError as exc:
            results[path] = ["open", str(exc)]
            continue
        steps = []
        for step, run in (("attach_node", journal.attach_node),
                          ("enqueue", lambda: journal.enqueue([NewJob("e8", "q", "t", b"")]))):
            try:
                run()
                steps.append([step, "ok"])
            except JournalError as exc:
                steps.append([step, str(exc)])
                break
        journal.close()
        results[path] = steps[-1] if steps[-1][1] != "ok" else ["none", "no error"]
    print(json.dumps(results))
""")


def test_e8_journal_without_write_permission_names_the_path(tmp_path: Path) -> None:
    """E8: a read-only directory or DB file gives a JournalError naming the path and permission.

    Tests run as root here, and root ignores file modes; the child process drops
    CAP_DAC_OVERRIDE first so that the modes apply to it.
    """
    read_only_dir = tmp_path / "read-only-dir"
    read_only_dir.mkdir()
    existing_dir = tmp_path / "read-only-dir-existing-db"
    existing_dir.mkdir()
    writable_dir = tmp_path / "writable-dir"
    writable_dir.mkdir()
    existing_db = existing_dir / "journal.db"
    read_only_file = writable_dir / "read-only-file.db"
    for path in (existing_db, read_only_file):
        SQLiteJournal(path).close()
    for leftover in list(existing_dir.iterdir()) + list(writable_dir.iterdir()):
        if leftover.suffix != ".db":
            leftover.unlink()
    read_only_file.chmod(0o444)
    read_only_dir.chmod(0o555)
    existing_dir.chmod(0o555)
    new_db = read_only_dir / "journal.db"
    try:
        child = subprocess.run(
            [sys.executable, "-c", E8_CHILD, str(read_only_dir / "probe"), str(new_db), str(existing_db),
             str(read_only_file)],
            capture_output=True, text=True, timeout=30)
    finally:
        for d in (read_only_dir, existing_dir):
            d.chmod(0o755)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    print(result)
    # A new journal in a read-only directory, and an existing one there: refused at open.
    # A read-only file: refused no later than attach_node, before a node takes any work.
    expected_step = {str(new_db): "open", str(existing_db): "open", str(read_only_file): "attach_node"}
    for path, (step, message) in result.items():
        assert step == expected_step[path], (path, step, message)
        assert path in message, message
        assert "permission" in message, message


# -- E7: corruption is found at node start ---------------------------------------------------------
def test_a_reader_that_must_not_create_is_refused_a_missing_file(db_path: Path) -> None:
    with pytest.raises(JournalError, match=f"journal {db_path} does not exist"):
        SQLiteJournal(db_path, create=False)
    assert list(db_path.parent.iterdir()) == []
    SQLiteJournal(db_path).close()
    reader = SQLiteJournal(db_path, create=False)  # an existing file opens as before
    try:
        assert reader.counts() == {}
    finally:
        reader.close()


@pytest.mark.parametrize("busy_timeout", [0, -1.0, math.inf, math.nan, 86_400.5])
def test_g12_busy_timeout_out_of_range_is_refused_before_sqlite(db_path: Path, busy_timeout: float) -> None:
    with pytest.raises(ValueError, match="busy_timeout must be seconds > 0 and <= 86400"):
        SQLiteJournal(db_path, busy_timeout=busy_timeout)
    assert not db_path.exists()


def test_e7_a_damaged_file_is_refused_at_node_start_naming_it(db_path: Path) -> None:
    j = SQLiteJournal(db_path)
    j.attach_node()
    j.enqueue([new_job(f"job-{i:05d}", payload=os.urandom(200)) for i in range(3000)])
    j.close()
    SQLiteJournal(db_path).close()  # sound: it opens
    with sqlite3.connect(db_path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # a leaf page of the jobs table in its middle (dbstat names each page's b-tree)
        leaves = [row[0] for row in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'actorq_jobs' AND pagetype = 'leaf' ORDER BY pageno")]
    assert pages > 20 and len(leaves) > 20
    with open(db_path, "r+b") as f:  # flip the header bytes of that page
        f.seek(page_size * (leaves[len(leaves) // 2] - 1))
        f.write(b"\xff" * 16)
    damaged = SQLiteJournal(db_path)
    try:
        with pytest.raises(JournalError, match="failed its integrity check") as info:
            damaged.attach_node()
        assert str(db_path) in str(info.value) and "restore it from a backup" in str(info.value)
    finally:
        damaged.close()
    second = SQLiteJournal(db_path)  # the refused start left no node lock behind
    with pytest.raises(JournalError, match="integrity check"):
        second.attach_node()
    with pytest.raises(JournalError, match=f"journal {db_path} is not a valid SQLite database"):
        second.list_jobs(limit=10_000)  # a read that meets the damage (the whole table) names the file too
    second.close()


COMMITTER = textwrap.dedent("""
    import sqlite3, sys, time
    path, done_flag = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS competitor (n INTEGER)")
    print("committing", flush=True)
    n = 0
    while True:  # a producer writing on its own connection: the lock taken back right after each commit
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO competitor VALUES (?)", (n,))
        conn.execute("COMMIT")
        n += 1
        if n % 50 == 0 and __import__("os").path.exists(done_flag):
            break
    print(n, flush=True)
""")


def test_write_lock_is_won_beside_a_process_committing_without_pause(db_path: Path, tmp_path: Path) -> None:
    """Another process commits in a tight loop, retaking the lock right after each commit.
    Every one of our transactions still gets the lock within a short busy_timeout (1 s; one
    failed run in ~30 at 0.5 s on a machine running four test suites at once): SQLite's own
    wait (1, 2, 5 ... 100 ms between tries) kept missing the gaps, for seconds."""
    journal = SQLiteJournal(db_path, busy_timeout=1.0)
    done = tmp_path / "done"
    other = subprocess.Popen([sys.executable, "-c", COMMITTER, str(db_path), str(done)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "committing", other.stderr.read() if other.stderr else ""
        t = 0
        while t < 200 or (journal.lock_waits == 0 and t < 20_000):  # until we met the other's lock
            assert journal.enqueue([new_job(f"j{t:05d}")]) == 1
            t += 1
        done.touch()
        out, err = other.communicate(timeout=60)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert other.returncode == 0, err
    print("competitor commits:", out.strip(), "our waits for the lock:", journal.lock_waits)
    assert journal.lock_waits > 0  # the other process did hold the lock when we asked
    assert journal.pragma("busy_timeout") == 1000  # SQLite's own wait is back for every other statement
    assert journal.counts() == {"q": {"ready": t}}
    journal.close()


def test_write_lock_wait_ends_at_busy_timeout(db_path: Path) -> None:
    """A lock held past busy_timeout: the transaction fails as transient (try again), nothing written."""
    journal = SQLiteJournal(db_path, busy_timeout=0.2)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalError, match="locked") as caught:
            journal.enqueue([new_job("late")])
        assert caught.value.transient
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert journal.lock_waits == 1
    assert journal.enqueue([new_job("late")]) == 1  # the lock is free again
    journal.close()


# -- retention: the prune reads a range of the finished jobs' index, by the injected clock ----------


def test_prune_is_a_range_scan_of_the_finished_jobs_index(journal: SQLiteJournal) -> None:
    from actorq.journal._sqlitesql import STATEMENTS

    plan = " | ".join(row[3] for row in journal._conn.execute(f"EXPLAIN QUERY PLAN {STATEMENTS.prune}",
                                                              ("succeeded", T0, 10, T0)))
    assert "INDEX actorq_jobs_finished (state=? AND finished_at<?)" in plan, plan
    assert "SCAN actorq_jobs" not in plan, plan  # never a full scan of the jobs


def test_prune_ages_finished_jobs_by_the_injected_clock(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("early"), new_job("late")])
    early, late = sorted(journal.lease(["q"], "w1", 2, 30.0))
    journal.complete([(early.id, early.lease_id)])
    clock.now = T0 + 100
    journal.complete([(late.id, late.lease_id)])
    clock.now = T0 + 160
    assert journal.prune({JobState.SUCCEEDED: 60.0}, 10) == 1  # finished 160 s ago: past 60 s
    assert journal.get("early") is None and journal.get("late") is not None
    assert journal.prune({JobState.SUCCEEDED: 60.0}, 10) == 0  # finished 60 s ago: not past it
    clock.now = T0 + 160.5
    assert journal.prune({JobState.SUCCEEDED: 60.0}, 10) == 1


# -- the operator's reads (actorq jobs / queues / status): ranges of an index, never the table -------


@pytest.mark.parametrize(("name", "state", "params", "expected"), [
    ("list_page", JobState.DEAD, ("q", "", None, 10),
     "SEARCH actorq_jobs USING INDEX actorq_jobs_state_queue (state=? AND queue=? AND id>?)"),
    ("queues_in_state", JobState.FAILED, (), "USING COVERING INDEX actorq_jobs_state_queue (state=? AND queue>?)"),
    ("list_many", JobState.READY, ("q", "", None, 10), "SEARCH actorq_jobs USING PRIMARY KEY (id>?)"),
    ("list_many", JobState.SUCCEEDED, (None, "", None, 10), "SEARCH actorq_jobs USING PRIMARY KEY (id>?)"),
    ("list_leased", None, (None, "", None, 10), "SCAN actorq_jobs USING INDEX actorq_jobs_leased"),
    ("list_all", None, ("", None, 10), "SEARCH actorq_jobs USING PRIMARY KEY (id>?)"),
    ("oldest_ready", None, (), "SEARCH actorq_jobs USING INDEX actorq_jobs_ready (queue=? AND priority=?)"),
    ("clear_queue", JobState.READY, ("q", 10), "SEARCH actorq_jobs USING INDEX actorq_jobs_ready (queue=?)"),
    ("clear_queue", JobState.RETRY, ("q", 10),
     "SEARCH actorq_jobs USING COVERING INDEX actorq_jobs_state_queue (state=? AND queue=?)"),
    ("inspect", None, ("x",), "SEARCH actorq_jobs USING PRIMARY KEY (id=?)"),
    ("inspect_errors", None, ("x",), "SEARCH actorq_errors USING INDEX actorq_errors_job (job_id=?)"),
])
def test_listings_read_an_index_never_the_table(journal: SQLiteJournal, name: str, state: JobState | None,
                                                params: tuple[object, ...], expected: str) -> None:
    """Each of the operator's reads is a range of an index or of the primary key. The leased
    jobs' index is read whole (at most the workers' credits) and sorted."""
    from actorq.journal._sqlitesql import STATEMENTS
    from actorq.journal._sqltext import for_state

    statement = getattr(STATEMENTS, name)
    plan = " | ".join(row[3] for row in journal._conn.execute(
        f"EXPLAIN QUERY PLAN {for_state(statement, state) if state else statement}", params))
    assert expected in plan, plan
    scans = [step for step in plan.split(" | ") if step.startswith("SCAN")]
    # q, p, m: the skip scans' own rows (queues, their priorities), never jobs
    assert all(step in ("SCAN q", "SCAN p", "SCAN m") or step == "SCAN actorq_jobs USING INDEX actorq_jobs_leased"
               for step in scans), plan


def test_the_operators_index_holds_only_the_states_off_the_hot_path(journal: SQLiteJournal) -> None:
    """ready -> leased -> succeeded never writes actorq_jobs_state_queue: it is partial, on
    exactly `INDEXED_STATES`, and a dead job is found through it."""
    from actorq.journal._sqltext import INDEXED_STATES

    [(text,)] = journal._conn.execute("SELECT sql FROM sqlite_master WHERE name = 'actorq_jobs_state_queue'")
    where = text.split("WHERE", 1)[1]
    assert sorted(part.split("=")[1].strip(" '\n") for part in where.split(" OR ")) == sorted(
        s.value for s in INDEXED_STATES)
    assert not {JobState.READY, JobState.LEASED, JobState.SUCCEEDED} & set(INDEXED_STATES)
    journal.enqueue([new_job("ok"), new_job("bad", max_attempts=1)])
    leased = journal.lease(["q"], "w1", 2, 30.0)
    assert journal.complete([(j.id, j.lease_id) for j in leased if j.id == "ok"]) == 1
    bad = next(j for j in leased if j.id == "bad")
    assert journal.fail([Failure(bad.id, bad.lease_id, "boom", JobState.DEAD)]) == 1
    assert journal.list_jobs(state=JobState.DEAD) == journal.list_jobs(state="dead", queue="q")
    assert [j.id for j in journal.list_jobs(state=JobState.DEAD)] == ["bad"]


def test_flow_key_admission_reads_are_searches_of_the_keys_index(db_path: Path) -> None:
    """What an admission trigger reads for a key (its earliest blocked job, its count of
    admitted ones) is a search of actorq_jobs_flow, never a scan of the jobs: a partial index
    whose predicate the statement's own terms do not imply is not used by SQLite."""
    from actorq.journal._sqltext import admitted_of_key

    SQLiteJournal(db_path).close()
    with sqlite3.connect(db_path) as conn:
        for query in ("SELECT id FROM actorq_jobs WHERE flow_key = 'k' AND state = 'blocked' ORDER BY id LIMIT 1",
                      "SELECT " + admitted_of_key("actorq_jobs", "'k'")):
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
            assert "INDEX actorq_jobs_flow" in plan and "SCAN actorq_jobs" not in plan, plan


def test_an_admission_names_the_admitted_jobs_queue_for_the_writers_wake(db_path: Path) -> None:
    """The job a finished one admits may be in another queue: `take_admitted` names it once,
    for the writer to wake that queue's dispatcher after its commit."""
    journal = SQLiteJournal(db_path)
    try:
        journal.enqueue([new_job("a1", ordering_key="K"), new_job("a2", queue="other", ordering_key="K")])
        assert journal.take_admitted() == set()  # a1 was admitted by its own insert: its enqueue wakes
        [first] = journal.lease(["q"], "w", 1, 60.0)
        assert journal.complete([(first.id, first.lease_id)]) == 1
        assert journal.take_admitted() == {"other"}
        assert journal.take_admitted() == set()
    finally:
        journal.close()


# -- kept counts and queue slots (schema 14) ------------------------------------------------------


def test_a_version_13_journal_gets_its_counts_from_the_jobs_it_holds(db_path: Path) -> None:
    from actorq.journal.sqlite import _schema_sql, _statements

    raw = sqlite3.connect(db_path, isolation_level=None)
    for version in range(1, 14):  # a file as the previous actorq left it, with jobs in it
        for statement in _statements(_schema_sql(version)):
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 13")
    raw.executemany("INSERT INTO actorq_jobs (id, queue, task, payload, state, run_at, max_attempts, created_at,"
                    " finished_at) VALUES (?, ?, 't', x'929080', ?, 0, 3, 0, ?)",
                    [(f"j{n}", "a" if n % 3 else "b", state, None if state == "ready" else 1.0)
                     for n, state in enumerate(["ready", "succeeded", "dead"] * 5)])
    raw.close()
    journal = SQLiteJournal(db_path)
    try:
        assert journal.applied_versions == [14]
        expected = {"a": {"succeeded": 5, "dead": 5}, "b": {"ready": 5}}
        assert journal.counts() == journal._scan_counts() == expected
        [first] = journal.lease(["b"], "w", 1, 60.0)
        journal.complete([(first.id, first.lease_id)])
        assert journal.counts() == journal._scan_counts() == {**expected, "b": {"ready": 4, "succeeded": 1}}
    finally:
        journal.close()


def test_the_figures_reads_never_touch_the_jobs_table(journal: SQLiteJournal) -> None:
    """`counts` and `queue_stats` read their own small tables; `counts` reads of the jobs only
    the leased ones' index (at most the jobs in flight)."""
    from actorq.journal._sqlitesql import STATEMENTS

    for statement, params in ((STATEMENTS.counts, ()), (STATEMENTS.queue_stats, (0,))):
        plan = " | ".join(row[3] for row in journal._conn.execute("EXPLAIN QUERY PLAN " + statement, params))
        jobs = [step for step in plan.split(" | ") if "actorq_jobs" in step]
        assert all(step == "SCAN actorq_jobs USING INDEX actorq_jobs_leased" for step in jobs), plan
        assert "SCAN actorq_counts" in plan or "actorq_queue_slots" in plan, plan
    assert "actorq_jobs" not in " ".join(row[3] for row in journal._conn.execute(
        "EXPLAIN QUERY PLAN " + STATEMENTS.queue_stats, (0,)))
    scan = " | ".join(row[3] for row in journal._conn.execute("EXPLAIN QUERY PLAN " + STATEMENTS.counts_scan))
    assert "actorq_jobs" in scan  # the tests' truth does read them


def test_queue_slots_follow_the_injected_clock_and_maintain_drops_the_old_ones(
        journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a", run_at=T0 - 30), new_job("b")])
    clock.now += 5
    leased = journal.lease(["q"], "w", 2, 60.0)
    assert journal.complete([(j.id, j.lease_id) for j in leased]) == 2
    stats = journal.queue_stats(60)["q"]
    assert (stats.finished, stats.failed, stats.leased) == (2, 0, 2)
    assert (stats.wait_sum, stats.wait_max) == (35 + 5, 35)  # a waited from T0-30, b from T0
    assert stats.seconds == T0 + 5 - ((T0 + 5 - 60) // 10) * 10
    clock.now += 120
    assert journal.queue_stats(60) == {}  # out of the window, still kept
    assert journal.queue_stats(600)["q"].finished == 2
    journal.maintain()
    assert journal.queue_stats(3600)["q"].leased == 2
    clock.now += 3600
    journal.maintain()
    assert journal._conn.execute("SELECT count(*) FROM actorq_queue_slots").fetchone()[0] == 0
    # the finishes' slots folded into slot 0: the counts stay, and the rows are few again
    assert journal._conn.execute("SELECT slot, n FROM actorq_counts WHERE state = 'succeeded'").fetchall() == [(0, 2)]
    assert journal.counts() == {"q": {"succeeded": 2}}
    assert journal.queue_stats(3600) == {}
