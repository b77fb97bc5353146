"""PostgreSQL-only journal tests: URLs, migrations, SKIP LOCKED, transactional enqueue,
LISTEN/NOTIFY, lost connections, an unreachable server, credentials.

ACCEPTANCE ids: B4 (SKIP LOCKED never blocks), B5 (transactional enqueue),
E1 (pg_terminate_backend during a transaction and through the journal writer),
E2 (pg_terminate_backend on the LISTEN connection), E3 (the server goes away
and comes back: a TCP proxy taken down and up, since the shared server is not
restarted by tests), E4 (unreachable at start), E8 (a role without the
privileges the journal needs), H9 (no password in messages or logs), H10
(PGPASSFILE, ~/.pgpass, libpq environment variables), H11 (schema names are
validated identifiers). The state machine is in the journal contract (test_journal_contract.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from journal_support import (
    PG_ADDRESS, PG_URL, PasswordCatcher, TcpProxy, closed_port, new_schema_name, pg_admin, reclaim, wait_for,
)

from actorq.errors import JournalError
from actorq.jobs import journal_writer as jw
from actorq.journal import Failure, JobState, Listener, NewJob, PostgresJournal, enqueue_in, migrate, open_journal
from actorq.journal import postgres
from actorq.journal.protocol import TaskDefaults

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("needs_pg")]

CANARY = "canary-s3cr3t"


@pytest.fixture
def journal(pg_journal: PostgresJournal) -> PostgresJournal:
    return pg_journal


def job(job_id: str, queue: str = "q", **kw: Any) -> NewJob:
    return NewJob(job_id, queue, "tests.noop", b"", **kw)


def terminate(pid: int) -> None:
    with pg_admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def backend_pid(journal: PostgresJournal) -> int:
    assert journal._conn is not None
    return journal._conn.info.backend_pid


# -- URLs, schema names, the optional extra -----------------------------------------------------


def test_open_journal_selects_postgres_for_both_schemes(pg_schema: str) -> None:
    for url in (PG_URL, PG_URL.replace("postgresql://", "postgres://", 1)):
        j = open_journal(url, schema=pg_schema)
        try:
            assert isinstance(j, PostgresJournal) and j.schema == pg_schema
        finally:
            j.close()
    with pytest.raises(ValueError) as info:
        open_journal(f"mysql://bob:{CANARY}@db/x")
    assert "sqlite:///" in str(info.value) and CANARY not in str(info.value)


@pytest.mark.parametrize("bad", ["", "Actorq", "1jobs", "a-b", 'x"; DROP SCHEMA public; --', "a" * 64, "über"])
def test_h11_schema_names_are_validated_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresJournal(PG_URL, schema=bad)
    with pytest.raises(ValueError, match="schema"):
        migrate(PG_URL, bad)
    with pytest.raises(ValueError, match="schema"):
        Listener(PG_URL, lambda q: None, schema=bad)


def test_h11_the_longest_schema_name_works() -> None:
    schema = ("t_" + new_schema_name() + "_" * 63)[:63]
    try:
        assert migrate(PG_URL, schema) == ALL
        j = PostgresJournal(PG_URL, schema=schema)
        j.enqueue([job("a")])
        assert j.counts() == {"q": {"ready": 1}}
        j.close()
    finally:
        with pg_admin() as admin:
            admin.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


WITHOUT_PSYCOPG = textwrap.dedent("""
    import sys

    class NoPsycopg:
        def find_spec(self, name, path=None, target=None):
            if name == "psycopg" or name.startswith("psycopg."):
                raise ImportError("No module named 'psycopg' (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoPsycopg())
    import actorq, actorq.journal, actorq.jobs, actorq.node.node  # all import without psycopg
    from actorq.errors import JournalError
    from actorq.journal.backends import journal_class
    from actorq.journal.config import JournalConfig
    assert "psycopg" not in sys.modules
    try:
        actorq.journal.open_journal(sys.argv[1])
    except JournalError as exc:
        print("open:", exc)
    try:
        journal_class(JournalConfig(url=sys.argv[1]).url)
    except JournalError as exc:
        print("backend:", exc)
    try:
        from actorq.journal import PostgresJournal
    except ImportError as exc:
        print("import:", exc)
    print("sqlite ok:", type(actorq.journal.open_journal("sqlite:///" + sys.argv[2])).__name__)
""")


def test_actorq_imports_without_psycopg_and_names_the_extra(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, PG_URL, str(tmp_path / "j.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("open:") and "pip install 'actorq[postgres]'" in lines[0]
    assert lines[1].startswith("backend:") and "pip install 'actorq[postgres]'" in lines[1]
    assert lines[2].startswith("import:") and "pip install 'actorq[postgres]'" in lines[2]
    assert lines[3] == "sqlite ok: SQLiteJournal"


def test_both_dialects_name_the_statements_of_one_job_alike() -> None:
    from actorq.journal import _pgsql, _sqlitesql

    sqlite_names = {f.name for f in dataclasses.fields(_sqlitesql.Statements)}
    pg_names = {f.name for f in dataclasses.fields(_pgsql.Statements)}
    # PostgreSQL writes the error rows inside `fail`, and deletes them inside `prune`; its
    # triggers admit a freed key's jobs themselves, where SQLite's journal first asks which
    # freed keys have blocked jobs; its triggers write a lease's slot and its fold drops old ones,
    # where SQLite's lease and maintain do
    assert sqlite_names - pg_names == {"fail_error", "prune_errors", "blocked_keys", "lease_slot", "drop_slots",
                                       "fold_slots", "drop_lease_slots", "stale_slots"}


# -- migrations -----------------------------------------------------------------------------------


ALL = [m.version for m in postgres.MIGRATIONS]  # every migration this actorq has, in order
LATEST = ALL[-1]


def _versions(schema: str) -> list[int]:
    with pg_admin() as admin:
        return [v for (v,) in admin.execute(
            psycopg.sql.SQL("SELECT version FROM {} ORDER BY version").format(
                psycopg.sql.Identifier(schema, "actorq_migrations")))]


def test_migrate_creates_the_schema_once_and_records_it(pg_schema: str) -> None:
    assert migrate(PG_URL, pg_schema) == ALL
    assert migrate(PG_URL, pg_schema) == []  # already up to date
    assert _versions(pg_schema) == ALL
    j = PostgresJournal(PG_URL, schema=pg_schema, create_schema=False)
    j.enqueue([job("a")])
    assert j.counts() == {"q": {"ready": 1}}
    j.close()


def test_opening_a_fresh_schema_migrates_it_unless_told_not_to(pg_schema: str) -> None:
    with pytest.raises(JournalError, match="run `actorq migrate`") as info:
        PostgresJournal(PG_URL, schema=pg_schema, create_schema=False)
    assert pg_schema in str(info.value)
    j = PostgresJournal(PG_URL, schema=pg_schema)  # the first run works as with SQLite
    j.close()
    assert _versions(pg_schema) == ALL


def test_concurrent_migrations_apply_each_version_once(pg_schema: str) -> None:
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(PG_URL, pg_schema))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=len) == [[], [], [], ALL]
    assert _versions(pg_schema) == ALL


def test_an_older_schema_is_refused_until_migrated(pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert migrate(PG_URL, pg_schema) == ALL
    extra = postgres.Migration(LATEST + 1, "test_extra", "CREATE TABLE actorq_test_extra (x integer);")
    monkeypatch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS + (extra,))  # a newer actorq
    with pytest.raises(JournalError) as info:
        PostgresJournal(PG_URL, schema=pg_schema)
    assert f"version {LATEST}" in str(info.value) and "run `actorq migrate`" in str(info.value)
    assert migrate(PG_URL, pg_schema) == [LATEST + 1]
    assert _versions(pg_schema) == [*ALL, LATEST + 1]
    PostgresJournal(PG_URL, schema=pg_schema).close()
    other = new_schema_name()
    try:
        assert migrate(PG_URL, other) == [*ALL, LATEST + 1]  # a fresh schema gets every version in order
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP SCHEMA "{other}" CASCADE')


def test_a_schema_at_003_upgrades_to_the_task_catalog_and_keeps_its_jobs(
        pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [m.version for m in postgres.MIGRATIONS[:4]] == [1, 2, 3, 4]
    with monkeypatch.context() as before:  # the previous actorq: migrations 001-003
        before.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:3])
        assert migrate(PG_URL, pg_schema) == [1, 2, 3]
    with pg_admin() as admin:  # the previous actorq's insert (this one names the columns of 007)
        admin.execute(f'INSERT INTO "{pg_schema}".actorq_jobs (id, queue, task, payload, state, run_at,'
                      " max_attempts, unique_key) VALUES ('old', 'q', 'tests.noop', '', 'ready', now(), 20, 'k')")
    with pytest.raises(JournalError, match="version 3; this actorq needs version"):
        PostgresJournal(PG_URL, schema=pg_schema)
    assert migrate(PG_URL, pg_schema) == ALL[3:]
    assert _versions(pg_schema) == ALL
    journal = PostgresJournal(PG_URL, schema=pg_schema, create_schema=False)
    try:
        journal.attach_node()  # the privileges check covers the new table
        assert journal.get("old").state is JobState.READY  # type: ignore[union-attr]
        assert journal.holders(["k"]) == {"k": "old"}
        journal.declare_tasks([TaskDefaults("t", "q", 1, 2)])
        assert journal.declared_tasks(["t"]) == {"t": TaskDefaults("t", "q", 1, 2)}
    finally:
        journal.close()


def test_a_newer_or_foreign_schema_is_refused(pg_schema: str) -> None:
    assert migrate(PG_URL, pg_schema) == ALL
    with pg_admin() as admin:
        admin.execute(f'INSERT INTO "{pg_schema}".actorq_migrations (version, name) VALUES (99, %s)', ("future",))
    for attempt in (lambda: PostgresJournal(PG_URL, schema=pg_schema), lambda: migrate(PG_URL, pg_schema)):
        with pytest.raises(JournalError, match="Upgrade actorq") as info:
            attempt()
        assert "99" in str(info.value)
    foreign = new_schema_name()
    try:
        with pg_admin() as admin:
            admin.execute(f'CREATE SCHEMA "{foreign}"; CREATE TABLE "{foreign}".jobs (id int)')
        with pytest.raises(JournalError, match="not an actorq journal"):
            PostgresJournal(PG_URL, schema=foreign)
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP SCHEMA "{foreign}" CASCADE')


# -- many nodes, privileges (E8) -------------------------------------------------------------------


def test_attach_node_takes_no_lock_many_nodes_share_a_schema(pg_schema: str) -> None:
    nodes = [PostgresJournal(PG_URL, schema=pg_schema) for _ in range(3)]
    try:
        for node in nodes:
            node.attach_node()
            node.attach_node()  # idempotent
        nodes[0].enqueue([job(f"j{n}") for n in range(6)])
        leased = [node.lease(["q"], f"node-{k}/1/x", 2, 30.0) for k, node in enumerate(nodes)]
        assert sorted(j.id for batch in leased for j in batch) == [f"j{n}" for n in range(6)]
    finally:
        for node in nodes:
            node.close()


def test_e8_a_role_without_privileges_gets_a_clear_error(pg_schema: str) -> None:
    migrate(PG_URL, pg_schema)
    role = f"r_{pg_schema}"[:63]
    url = PG_URL.replace("://postgres@", f"://{role}@", 1)
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(JournalError) as info:
            PostgresJournal(url, schema=pg_schema)
        assert f"permission denied for schema {pg_schema}" in str(info.value)
        with pg_admin() as admin:
            admin.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO "{role}";'
                          f'GRANT SELECT ON "{pg_schema}".actorq_migrations, "{pg_schema}".actorq_jobs,'
                          # the kept counts (migration 016): a reader of them reads these
                          f' "{pg_schema}".actorq_counts, "{pg_schema}".actorq_figure_deltas TO "{role}"')
        reader = PostgresJournal(url, schema=pg_schema)  # may open and read ...
        try:
            assert reader.counts() == {}
            with pytest.raises(JournalError) as info:  # ... but a node needs to write
                reader.attach_node()
            assert "INSERT" in str(info.value) and "actorq_jobs" in str(info.value)
            with pytest.raises(JournalError, match="permission denied"):
                reader.enqueue([job("a")])
            assert reader.counts() == {}  # the connection is still usable after the error
        finally:
            reader.close()
        with pg_admin() as admin:  # everything a node needed before the task catalog
            admin.execute(f'GRANT INSERT, UPDATE ON "{pg_schema}".actorq_jobs TO "{role}";'
                          f'GRANT SELECT, INSERT ON "{pg_schema}".actorq_errors TO "{role}";'
                          f'GRANT USAGE ON SEQUENCE "{pg_schema}".actorq_lease_ids TO "{role}"')
        node = PostgresJournal(url, schema=pg_schema)
        try:
            with pytest.raises(JournalError, match="UPDATE on .*actorq_tasks"):  # nodes declare their tasks
                node.attach_node()
            with pg_admin() as admin:
                admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{pg_schema}".actorq_tasks TO "{role}"')
            with pytest.raises(JournalError, match="DELETE on .*actorq_schedules"):  # nodes write their schedules
                node.attach_node()
            with pg_admin() as admin:
                admin.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{pg_schema}".actorq_schedules TO "{role}"')
            node.attach_node()
            node.declare_tasks([TaskDefaults("t", "q", 0, 1)])
        finally:
            node.close()
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


# -- statements that fail inside a group ------------------------------------------------------------


def test_a_failing_enqueue_fails_alone_any_other_failure_fails_the_group(journal: PostgresJournal) -> None:
    with journal.transaction():
        journal.enqueue([job("a")])
        with pytest.raises(JournalError, match="check constraint"):
            journal.enqueue([job("b"), job("c", max_attempts=0)])
        journal.enqueue([job("d")])  # the enqueue ran under a savepoint: the group goes on
    assert sorted(journal.counts()["q"].items()) == [("ready", 2)]
    journal.lease(["q"], "w1", 1, 30.0)
    # Any other statement's failure aborts the whole transaction, and the COMMIT says so.
    with pytest.raises(JournalError, match="rolled back"):
        with journal.transaction():
            journal.enqueue([job("e")])
            with pytest.raises(JournalError, match="out of range"):
                journal.renew(["w1"], 1e300)  # refused by the server
            with pytest.raises(JournalError, match="lost"):  # refused at once, not run
                journal.promote()
    assert journal.get("e") is None and journal.counts() == {"q": {"ready": 1, "leased": 1}}


def test_error_texts_keep_everything_but_nul(journal: PostgresJournal) -> None:
    journal.enqueue([job("a"), job("b")])
    a, b = sorted(journal.lease(["q"], "w1", 2, 30.0))
    assert journal.fail([Failure(a.id, a.lease_id, "ValueError: \x00 in 'x' ünïcode", JobState.RETRY, 9e9)]) == 1
    assert reclaim(journal, "w1", "worker died\x00") == 1
    assert journal.get("a").errors == ["ValueError: \ufffd in 'x' ünïcode"]  # type: ignore[union-attr]
    assert journal.get("b").errors == ["worker died\ufffd"]  # type: ignore[union-attr]


# -- B4: SKIP LOCKED -------------------------------------------------------------------------------


def test_b4_claims_skip_rows_locked_by_another_transaction(pg_schema: str) -> None:
    # lock_timeout: if a claim ever waited on a row lock, it would fail fast, not hang.
    url = f"{PG_URL}?options=-c%20lock_timeout%3D2000"
    journal = PostgresJournal(url, schema=pg_schema)
    try:
        journal.enqueue([job(f"j{n}") for n in range(10)])
        with pg_admin() as other:
            with other.transaction():
                locked = [r[0] for r in other.execute(
                    f'SELECT id FROM "{pg_schema}".actorq_jobs ORDER BY id LIMIT 5 FOR UPDATE')]
                leased = journal.lease(["q"], "w1", 10, 30.0)
                assert sorted(j.id for j in leased) == [f"j{n}" for n in range(5, 10)]
                assert journal.lease(["q"], "w2", 10, 30.0) == []  # the rest are locked, not waited on
                # The locked rows are untouched by the claims.
                assert {journal.get(i).state for i in locked} == {JobState.READY}  # type: ignore[union-attr]
            # Once the other transaction ends, its rows can be claimed.
            assert sorted(j.id for j in journal.lease(["q"], "w3", 10, 30.0)) == locked
    finally:
        journal.close()


def test_prune_uses_the_finished_jobs_index_and_skips_rows_another_transaction_holds(pg_schema: str) -> None:
    journal = PostgresJournal(f"{PG_URL}?options=-c%20lock_timeout%3D2000", schema=pg_schema)
    try:
        journal.enqueue([job(f"j{n}") for n in range(6)])
        leased = journal.lease(["q"], "w1", 6, 30.0)
        assert journal.complete([(j.id, j.lease_id) for j in leased]) == 6
        with pg_admin() as other:
            other.execute("SET enable_seqscan = off")  # the index can serve it: the plan names it
            other.execute(f'SET search_path TO "{pg_schema}"')
            plan = "\n".join(row[0] for row in other.execute(
                "EXPLAIN " + journal._sql.prune.replace(f'"{pg_schema}".', ""),
                {"state": "succeeded", "age": 0.0, "limit": 10}))
            assert "actorq_jobs_finished" in plan, plan
            with other.transaction():
                locked = [r[0] for r in other.execute(
                    f'SELECT id FROM "{pg_schema}".actorq_jobs ORDER BY id LIMIT 2 FOR UPDATE')]
                assert journal.prune({JobState.SUCCEEDED: -3600.0}, 10) == 4  # never waits on the locked two
                assert all(journal.get(i) is not None for i in locked)
            assert journal.prune({JobState.SUCCEEDED: -3600.0}, 10) == 2
        assert journal.counts() == {}
    finally:
        journal.close()


def test_expired_skips_leases_another_transaction_holds_locked(pg_schema: str) -> None:
    """A rescue never waits on another node's locked rows: it takes the rest, and a later one those."""
    url = f"{PG_URL}?options=-c%20lock_timeout%3D2000"  # if it ever waited, it would fail fast, not hang
    journal, rival = PostgresJournal(url, schema=pg_schema), PostgresJournal(url, schema=pg_schema)
    try:
        journal.enqueue([job(f"j{n}") for n in range(4)])
        assert len(journal.lease(["q"], "dead-node/1/x", 4, -1.0)) == 4
        with pg_admin() as other:
            with other.transaction():
                locked = [r[0] for r in other.execute(
                    f'SELECT id FROM "{pg_schema}".actorq_jobs ORDER BY id LIMIT 2 FOR UPDATE')]
                with journal.transaction():
                    rows = journal.expired()
                    assert sorted(r.job_id for r in rows) == ["j2", "j3"]
                    assert rival.expired() == []  # a second rescuer skips what the first holds, too
                    assert journal.fail([Failure(r.job_id, r.lease_id, "lease expired", JobState.READY)
                                         for r in rows]) == 2
                assert {journal.get(i).state for i in locked} == {JobState.LEASED}  # type: ignore[union-attr]
            # Once the other transaction ends, the next rescue finds the rows it skipped.
            assert sorted(r.job_id for r in rival.expired()) == locked
    finally:
        journal.close()
        rival.close()


# -- B5: transactional enqueue -----------------------------------------------------------------------


def test_b5_enqueue_in_the_callers_transaction(journal: PostgresJournal, pg_schema: str) -> None:
    with psycopg.connect(PG_URL) as app:  # not autocommit: the app's own transaction
        assert enqueue_in(app, [job("committed"), job("committed")], pg_schema) == 1
        # Not visible to anyone before the commit, so no worker can take it.
        assert journal.get("committed") is None
        assert journal.lease(["q"], "w1", 10, 30.0) == []
        app.commit()
        leased = journal.lease(["q"], "w1", 10, 30.0)
        assert [j.id for j in leased] == ["committed"]
        assert journal.complete([(j.id, j.lease_id) for j in leased]) == 1

        assert enqueue_in(app, [job("rolled-back")], pg_schema) == 1
        app.execute("SELECT 1")  # the app's other work in the same transaction
        app.rollback()
    assert journal.get("rolled-back") is None
    assert journal.lease(["q"], "w2", 10, 30.0) == []  # never visible, never executed
    assert journal.counts() == {"q": {"succeeded": 1}}
    with psycopg.connect(PG_URL) as app:
        with pytest.raises(psycopg.errors.CheckViolation):
            enqueue_in(app, [job("bad", max_attempts=0)], pg_schema)
    assert enqueue_in(psycopg.connect(PG_URL), [], pg_schema) == 0


# -- unique_for: two connections racing for one key ------------------------------------------------


def _waits_on_a_key_lock(pid: int) -> bool:
    with pg_admin() as admin:
        row = admin.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()
    return row == ("Lock", "advisory")


def _enqueue_in_thread(journal: PostgresJournal, jobs: list[NewJob]) -> "queue.Queue[object]":
    out: queue.Queue[object] = queue.Queue()

    def run() -> None:
        try:
            with journal.transaction():  # as the journal writer and the Client do
                answer = (journal.enqueue(jobs), journal.holders([j.unique_key for j in jobs if j.unique_key]))
            out.put(answer)
        except BaseException as exc:  # handed to the test
            out.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


@pytest.mark.parametrize("first_ends", [False, True], ids=["holder-live", "holder-ended-in-its-transaction"])
def test_a_racing_insert_of_a_held_key_waits_for_the_first_and_adds_nothing(
        pg_schema: str, first_ends: bool) -> None:
    """The second inserter starts while the first's transaction is open, and is seen waiting on the
    key's lock before the first commits. When the holder also ended inside that transaction, the
    live unique index alone would let the second in: its period must still keep the key."""
    first, second = PostgresJournal(PG_URL, schema=pg_schema), PostgresJournal(PG_URL, schema=pg_schema)
    try:
        with first.transaction():
            assert first.enqueue([job("a", unique_key="k", unique_for=3600.0)]) == 1
            if first_ends:
                (leased,) = first.lease(["q"], "w1", 1, 30.0)
                assert first.complete([(leased.id, leased.lease_id)]) == 1
            answer = _enqueue_in_thread(second, [job("b", unique_key="k", unique_for=3600.0), job("c")])
            wait_for(lambda: _waits_on_a_key_lock(backend_pid(second)), message="the second waits on the key")
        inserted_and_holders = answer.get(timeout=30)
        assert inserted_and_holders == (1, {"k": "a"})  # "c" only; "b" learns the holder's id
        assert second.get("b") is None
        holder = first.get("a")
        assert holder is not None and holder.state is (JobState.SUCCEEDED if first_ends else JobState.READY)
    finally:
        first.close()
        second.close()


def test_enqueue_in_holds_the_keys_lock_to_the_callers_commit(journal: PostgresJournal, pg_schema: str) -> None:
    with psycopg.connect(PG_URL) as app:
        assert enqueue_in(app, [job("a", unique_key="k", unique_for=3600.0)], pg_schema) == 1
        app.execute(f'UPDATE "{pg_schema}".actorq_jobs SET state = %s, finished_at = now() WHERE id = %s',
                    ("cancelled", "a"))  # the app ends it in the same transaction
        answer = _enqueue_in_thread(journal, [job("b", unique_key="k")])
        wait_for(lambda: _waits_on_a_key_lock(backend_pid(journal)), message="the journal waits on the key")
        app.commit()
    assert answer.get(timeout=30) == (0, {"k": "a"})


# -- LISTEN/NOTIFY, E2 ---------------------------------------------------------------------------------


def test_listener_wakes_on_commit_and_survives_a_terminated_connection(
        journal: PostgresJournal, pg_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    events: queue.Queue[str | None] = queue.Queue()
    listener = Listener(PG_URL, events.put, schema=pg_schema, poll_interval=0.05)
    listener.start()
    listener.start()  # idempotent
    try:
        assert events.get(timeout=10) is None  # connected: "check every queue"
        with journal.transaction():
            journal.enqueue([job("a1", "alpha"), job("a2", "alpha"), job("b1", "beta")])
            journal.enqueue([job("later", "gamma", run_at=9e9)])  # scheduled: nothing to wake
            assert events.empty()  # nothing is delivered before the commit
        assert sorted([events.get(timeout=10), events.get(timeout=10)]) == ["alpha", "beta"]
        with psycopg.connect(PG_URL) as app:
            enqueue_in(app, [job("tx", "delta")], pg_schema)
            app.rollback()
            enqueue_in(app, [job("tx", "epsilon")], pg_schema)
            app.commit()
        assert events.get(timeout=10) == "epsilon"  # the rolled-back enqueue woke no one
        journal.fail([Failure(j.id, j.lease_id, "boom", JobState.RETRY, 0.0)
                      for j in journal.lease(["beta"], "w", 1, 30.0)])
        assert journal.promote() == 1
        assert events.get(timeout=10) == "beta"

        # E2: the server kills the LISTEN connection; the listener comes back by itself.
        caplog.set_level(logging.WARNING, logger="actorq.journal.postgres")
        assert listener.backend_pid is not None
        terminate(listener.backend_pid)
        assert events.get(timeout=10) is None  # reconnected: "check every queue" again
        wait_for(lambda: listener.reconnects == 1, message="the listener counted its reconnect")
        journal.enqueue([job("z1", "zeta")])
        assert events.get(timeout=10) == "zeta"
        lost = [r for r in caplog.records if "lost its connection" in r.getMessage()]
        assert len(lost) == 1 and pg_schema in lost[0].getMessage()
    finally:
        listener.stop()
        listener.stop()  # idempotent
    assert not listener.connected.is_set() and listener.backend_pid is None
    assert listener.notifications >= 5


def test_listener_keeps_retrying_an_unreachable_server_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="actorq.journal.postgres")
    port = closed_port()
    listener = Listener(f"postgresql://postgres@127.0.0.1:{port}/postgres", lambda q: None, max_backoff=0.05)
    listener.start()
    wait_for(lambda: len(caplog.records) >= 1, message="the outage was logged")
    listener.stop()
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1 and f"127.0.0.1:{port}" in unreachable[0].getMessage()


# -- E1: a connection terminated by the server ------------------------------------------------------


def test_e1_an_idle_connection_killed_by_the_server_is_replaced(journal: PostgresJournal) -> None:
    journal.enqueue([job("a")])
    terminate(backend_pid(journal))
    assert journal.enqueue([job("b")]) == 1  # nothing was in flight: reconnect and go on
    assert journal.counts() == {"q": {"ready": 2}}


def test_e1_a_connection_killed_mid_transaction_applies_nothing(journal: PostgresJournal) -> None:
    journal.enqueue([job("a"), job("b")])
    with pytest.raises(JournalError, match="connection was lost"):
        with journal.transaction():
            assert len(journal.lease(["q"], "w1", 1, 30.0)) == 1  # the claim, not yet committed
            journal.enqueue([job("c")])
            terminate(backend_pid(journal))
            journal.complete([("a", 1)])
    # Nothing of the transaction happened: no job is left leased by anyone.
    assert journal.counts() == {"q": {"ready": 2}}  # the next operation reconnected
    assert journal.get("c") is None
    with pytest.raises(JournalError, match="outcome|lost|terminat"):
        with journal.transaction():  # the loss can also surface only at COMMIT
            journal.lease(["q"], "w1", 1, 30.0)
            terminate(backend_pid(journal))
    assert journal.counts() == {"q": {"ready": 2}}


def test_e1_the_journal_writer_runs_a_group_again_when_its_connection_is_killed(
        pg_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    """C18: a connection lost before COMMIT rolled the whole group back: the writer runs it again on
    a new connection, so no op of it is dropped or answered with an error."""
    caplog.set_level(logging.WARNING, logger="actorq.jobs.journal_writer")

    async def main() -> None:
        writer = jw.JournalWriter(lambda: PostgresJournal(PG_URL, schema=pg_schema), asyncio.get_running_loop())
        await writer.start()
        assert writer.journal is not None
        pid = backend_pid(writer.journal)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(4)]
        killed = []

        def killer(journal: Any) -> Any:  # runs in the same group, after the enqueues
            if not killed:
                terminate(pid)
                killed.append(pid)
            return journal.counts()

        for n, fut in enumerate(futures[:3]):
            writer.enqueue(job(f"lost-{n}"), lambda r, e, f=fut: f.set_result((r, e)))
        writer.submit(jw.CALL, killer, lambda r, e, f=futures[3]: f.set_result((r, e)))
        results = await asyncio.gather(*futures)
        assert killed == [pid] and backend_pid(writer.journal) != pid  # type: ignore[arg-type]
        assert [r for r, _ in results[:3]] == ["lost-0", "lost-1", "lost-2"] and not any(e for _, e in results)
        assert results[3][0] == {"q": {"ready": 3}}  # the second run of the group saw its own enqueues
        assert writer.stats.failed_commits == 1 and writer.stats.jobs_enqueued == 3
        assert await writer.call(jw.CALL, lambda j: j.counts()) == {"q": {"ready": 3}}
        await writer.stop()

    asyncio.run(main())
    assert any("trying it again" in r.getMessage() for r in caplog.records)


# -- E3/E4: an unreachable server, H9: no password anywhere -------------------------------------------


def test_e4_unreachable_at_start_retries_logs_once_and_names_host_port(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger="actorq")
    port = closed_port()
    attempts = []
    real_connect = psycopg.connect
    monkeypatch.setattr(psycopg, "connect", lambda *a, **k: attempts.append(1) or real_connect(*a, **k))
    url = f"postgresql://alice:{CANARY}@127.0.0.1:{port}/postgres"
    with pytest.raises(JournalError) as info:
        PostgresJournal(url, connect_retry_for=0.6, max_backoff=0.1)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message.lower()
    assert len(attempts) >= 3  # it retried with backoff before giving up
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()  # once per outage
    texts = [message, repr(info.value)] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if CANARY in t]  # H9
    with pytest.raises(JournalError) as info:
        migrate(url, "actorq", connect_retry_for=0)
    assert CANARY not in str(info.value)


def test_e3_the_server_goes_away_mid_run_and_comes_back(pg_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="actorq.journal.postgres")
    proxy = TcpProxy(PG_ADDRESS)
    user = PG_URL.split("://", 1)[1].split("@", 1)[0]
    url = f"postgresql://{user}:{CANARY}@127.0.0.1:{proxy.port}/{PG_URL.rsplit('/', 1)[1]}"
    journal = PostgresJournal(url, schema=pg_schema, connect_retry_for=0.3, max_backoff=0.05)
    try:
        assert CANARY not in journal.url
        assert journal.enqueue([job("confirmed")]) == 1  # confirmed before the outage
        proxy.down()
        with pytest.raises(JournalError) as info:
            journal.enqueue([job("during")])
        assert f"127.0.0.1:{proxy.port}" in str(info.value)
        with pytest.raises(JournalError):  # still down: the next operation tries again
            journal.counts()
        proxy.up()
        assert journal.enqueue([job("after")]) == 1
        with pytest.raises(JournalError):
            with journal.transaction():
                journal.enqueue([job("cut-off")])
                proxy.down()
                journal.lease(["q"], "w1", 5, 30.0)
        proxy.up()
        assert sorted(i for i in ("confirmed", "during", "after", "cut-off") if journal.get(i)) == ["after", "confirmed"]
    finally:
        journal.close()
        proxy.close()
    messages = [r.getMessage() for r in caplog.records]
    # Once per outage: the first outage failed connects (logged once, then "reachable again");
    # the second only cut a transaction, which its JournalError reports, and the next connect worked.
    assert len([m for m in messages if "unreachable" in m]) == 1
    assert len([m for m in messages if "reachable again" in m]) == 1
    assert not [m for m in messages if CANARY in m]


# -- H10: where the credentials come from ------------------------------------------------------------


def test_h10_libpq_environment_variables_apply(pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    params = psycopg.conninfo.conninfo_to_dict(PG_URL)
    monkeypatch.setenv("PGHOST", str(params.get("host", "127.0.0.1")))
    monkeypatch.setenv("PGPORT", str(params.get("port", 5432)))
    monkeypatch.setenv("PGUSER", str(params.get("user", "postgres")))
    monkeypatch.setenv("PGDATABASE", str(params.get("dbname", "postgres")))
    journal = open_journal("postgresql://", schema=pg_schema)  # everything from the environment
    try:
        journal.enqueue([job("a")])
        assert journal.counts() == {"q": {"ready": 1}}
    finally:
        journal.close()


@pytest.mark.parametrize("source", ["PGPASSFILE", "HOME/.pgpass", "PGPASSWORD"])
def test_h9_h10_the_password_comes_from_libpq_and_is_never_shown(
        source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="actorq")
    server = PasswordCatcher()
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    line = f"127.0.0.1:{server.port}:*:alice:{CANARY}\n"
    if source == "PGPASSFILE":
        passfile = tmp_path / "passfile"
        passfile.write_text(line)
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    elif source == "HOME/.pgpass":
        home = tmp_path / "home"
        home.mkdir()
        (home / ".pgpass").write_text(line)
        (home / ".pgpass").chmod(0o600)
        monkeypatch.setenv("HOME", str(home))
    else:
        monkeypatch.setenv("PGPASSWORD", CANARY)
    try:
        with pytest.raises(JournalError) as info:
            PostgresJournal(f"postgresql://alice@127.0.0.1:{server.port}/db", connect_retry_for=0)
    finally:
        server.close()
    assert server.users == ["alice"] and server.passwords == [CANARY]  # libpq found it
    assert "password authentication failed" in str(info.value)
    texts = [str(info.value), repr(info.value)] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if CANARY in t]
    assert os.environ.get("PGPASSWORD", "") in ("", CANARY)


def test_queue_concurrency_one_holds_between_two_racing_journals(pg_journal: PostgresJournal, pg_schema: str) -> None:
    """Two nodes' journals lease a queue with concurrency 1 at the same moment, 25 times:
    never both get a job (the claim lock serializes them; the count sees the other's commit)."""
    from actorq.journal.protocol import QueueLimits

    pg_journal.declare_queues([QueueLimits("one", concurrency=1)])
    pg_journal.enqueue([NewJob(f"j{i:03}", "one", "t", b"\x92\x90\x80") for i in range(60)])
    other = PostgresJournal(PG_URL, schema=pg_schema)
    rounds, barrier = 25, threading.Barrier(2)
    got: list[list[Any]] = [[], []]

    def claim(journal: PostgresJournal, index: int) -> None:
        for _ in range(rounds):
            barrier.wait(timeout=20)
            got[index].append(journal.lease(["one"], f"n{index}/1/x", 5, 60))
            barrier.wait(timeout=20)  # both have leased: the round's winner finishes below
            if index == 0:
                winners = [jobs for jobs in (got[0][-1], got[1][-1]) if jobs]
                assert len(winners) == 1 and len(winners[0]) == 1, (got[0][-1], got[1][-1])
                pg_journal.complete([(winners[0][0].id, winners[0][0].lease_id)])
            barrier.wait(timeout=20)

    threads = [threading.Thread(target=claim, args=(j, i)) for i, j in enumerate((pg_journal, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()
    assert all(len(rounds_got) == rounds for rounds_got in got)
    assert pg_journal.counts()["one"] == {"succeeded": rounds, "ready": 60 - rounds}


def test_a_transaction_holding_one_queues_claim_never_waits_for_anothers(pg_journal: PostgresJournal,
                                                                         pg_schema: str) -> None:
    """Two group commits leasing two limited queues in opposite orders: the second claim of
    each is tried, not waited for, so neither deadlocks; that queue leases nothing this time."""
    from actorq.journal.protocol import QueueLimits

    pg_journal.declare_queues([QueueLimits("a", concurrency=5), QueueLimits("b", concurrency=5)])
    pg_journal.enqueue([NewJob(f"{q}{i}", q, "t", b"\x92\x90\x80") for q in "ab" for i in range(4)])
    other = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        with pg_journal.transaction(), other.transaction():
            assert len(pg_journal.lease(["a"], "n1/1/x", 1, 60)) == 1  # holds a's claim lock
            assert len(other.lease(["b"], "n2/1/y", 1, 60)) == 1  # holds b's
            assert pg_journal.lease(["b"], "n1/1/x", 1, 60) == []  # tried, not granted: no wait
            assert other.lease(["a"], "n2/1/y", 1, 60) == []
            assert len(pg_journal.lease(["a"], "n1/2/x", 1, 60)) == 1  # its own lock again: granted
        assert len(other.lease(["a"], "n2/1/y", 5, 60)) == 2  # both committed: the locks are gone
    finally:
        other.close()


def test_listings_read_an_index_never_the_table(pg_schema: str) -> None:
    """Each of the operator's reads can be served by an index: the partial (state, queue, id)
    one for the states off the hot path (named as literals, so the planner proves it covers
    them), the primary key for the others."""
    from actorq.journal._sqltext import for_state

    journal = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        journal.enqueue([job(f"j{n}") for n in range(3)])
        page = {"after": "", "task": None, "limit": 10}
        cases = [("list_page", JobState.DEAD, {**page, "queue": "q"}, "actorq_jobs_state_queue"),
                 ("queues_in_state", JobState.FAILED, {}, "actorq_jobs_state_queue"),
                 ("clear_queue", JobState.RETRY, {"queue": "q", "limit": 10}, "actorq_jobs_state_queue"),
                 ("clear_queue", JobState.READY, {"queue": "q", "limit": 10}, "actorq_jobs_ready"),
                 ("oldest_ready", None, {}, "actorq_jobs_ready"),
                 ("list_many", JobState.SUCCEEDED, {**page, "queue": None}, "actorq_jobs_pkey"),
                 ("list_all", None, page, "actorq_jobs_pkey")]
        with pg_admin() as other:
            other.execute("SET enable_seqscan = off")  # an index can serve each: the plan names it
            other.execute(f'SET search_path TO "{pg_schema}"')
            for name, state, params, index in cases:
                text = getattr(journal._sql, name).replace(f'"{pg_schema}".', "")
                text = for_state(text, state) if state is not None else text
                plan = "\n".join(row[0] for row in other.execute("EXPLAIN " + text, params))
                assert index in plan, (name, plan)
                assert "Seq Scan on actorq_jobs" not in plan, (name, plan)
    finally:
        journal.close()


# -- flow keys under concurrency: enqueuers and finishers on several connections --------------


def _states(pg_schema: str, prefix: str) -> dict[str, str]:
    with pg_admin() as admin:
        return dict(admin.execute(f'SELECT id, state FROM "{pg_schema}".actorq_jobs WHERE id LIKE %s ORDER BY id',
                                  (prefix + "%",)).fetchall())


def test_an_ordering_keys_next_job_is_admitted_only_when_the_first_ends_committed(pg_schema: str) -> None:
    """The follower waits blocked while its predecessor is live under any snapshot; the end's
    own transaction admits it, so it is ready exactly when that end commits."""
    a, b = PostgresJournal(PG_URL, schema=pg_schema), PostgresJournal(PG_URL, schema=pg_schema)
    try:
        a.enqueue([job("k1", ordering_key="K"), job("k2", ordering_key="K")])
        assert _states(pg_schema, "k") == {"k1": "ready", "k2": "blocked"}
        [first] = a.lease(["q"], "node-a", 10, 30.0)
        assert first.id == "k1" and b.lease(["q"], "node-b", 10, 30.0) == []
        with a.transaction():
            assert a.complete([(first.id, first.lease_id)]) == 1
            assert b.lease(["q"], "node-b", 10, 30.0) == []  # its end is not committed yet
        assert [j.id for j in b.lease(["q"], "node-b", 10, 30.0)] == ["k2"]
    finally:
        a.close()
        b.close()


def test_an_enqueue_waits_for_a_finisher_of_its_key_and_then_counts_its_end(pg_schema: str) -> None:
    """A finisher holds its key's lock (shared) to its commit: an enqueue of the key waits,
    then sees the slot free and admits its job, never leaving it blocked behind a job that
    has already ended."""
    a, b = PostgresJournal(PG_URL, schema=pg_schema), PostgresJournal(PG_URL, schema=pg_schema)
    try:
        a.enqueue([job("e1", ordering_key="K")])
        [first] = a.lease(["q"], "node-a", 1, 30.0)
        added: "queue.Queue[int]" = queue.Queue()
        with a.transaction():
            assert a.complete([(first.id, first.lease_id)]) == 1
            enqueuer = threading.Thread(target=lambda: added.put(b.enqueue([job("e2", ordering_key="K")])))
            enqueuer.start()
            enqueuer.join(0.2)
            assert enqueuer.is_alive() and added.empty()  # waiting for the finisher's commit
        enqueuer.join(20)
        assert added.get(timeout=1) == 1
        assert _states(pg_schema, "e") == {"e1": "succeeded", "e2": "ready"}
    finally:
        a.close()
        b.close()


def test_a_finisher_waits_for_an_enqueue_of_its_key_and_then_admits_its_job(pg_schema: str) -> None:
    """The other order: an enqueue holds the key's lock (exclusive) with its job inserted
    blocked; the end of the key's job waits for it, then sees that job and admits it."""
    a, b = PostgresJournal(PG_URL, schema=pg_schema), PostgresJournal(PG_URL, schema=pg_schema)
    try:
        a.enqueue([job("f1", ordering_key="K")])
        [first] = a.lease(["q"], "node-a", 1, 30.0)
        ended: "queue.Queue[int]" = queue.Queue()
        with b.transaction():
            assert b.enqueue([job("f2", ordering_key="K")]) == 1
            finisher = threading.Thread(target=lambda: ended.put(a.complete([(first.id, first.lease_id)])))
            finisher.start()
            finisher.join(0.2)
            assert finisher.is_alive() and ended.empty()  # its trigger waits for the key's lock
        finisher.join(20)
        assert ended.get(timeout=1) == 1
        assert _states(pg_schema, "f") == {"f1": "succeeded", "f2": "ready"}
    finally:
        a.close()
        b.close()


def test_enqueuers_and_finishers_racing_on_one_concurrency_key_never_exceed_its_limit(pg_schema: str) -> None:
    """Two claimers lease and complete jobs of one key with a limit of 3 as fast as they can
    while two enqueuers add 60 jobs each of it, one at a time; a watcher counts the key's
    admitted jobs throughout. Every job ends, none is left blocked, never more than 3 admitted."""
    limit, per_enqueuer = 3, 60
    total = 2 * per_enqueuer
    PostgresJournal(PG_URL, schema=pg_schema).close()  # migrated before the race
    done: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def claim(name: str) -> None:
        journal = PostgresJournal(PG_URL, schema=pg_schema)
        try:
            while not stop.is_set():
                leased = journal.lease(["q"], name, 2, 30.0)
                if leased:
                    # a row the other claimer's lease locked (it found the row leased once it
                    # could look, and holds the lock to its commit) is busy, as it is for a
                    # node's writer: completed again once that transaction has ended
                    pairs, accepted = [(j.id, j.lease_id) for j in leased], 0
                    while pairs:
                        busy: list[tuple[str, int]] = []
                        accepted += journal.complete(pairs, busy=busy)
                        pairs = busy
                    assert accepted == len(leased)
                    done.extend(j.id for j in leased)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            journal.close()

    def enqueue(n: int) -> None:
        journal = PostgresJournal(PG_URL, schema=pg_schema)
        try:
            for i in range(per_enqueuer):
                assert journal.enqueue([job(f"c{n}-{i:03}", concurrency_key="T", concurrency_limit=limit)]) == 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            journal.close()

    threads = [threading.Thread(target=claim, args=(f"node-{n}",)) for n in range(2)]
    threads += [threading.Thread(target=enqueue, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    most = 0
    with pg_admin() as watcher:
        for _ in range(20_000):
            most = max(most, watcher.execute(
                f"SELECT count(*) FROM \"{pg_schema}\".actorq_jobs WHERE flow_key = 'c:T'"
                " AND state IN ('scheduled', 'ready', 'leased', 'retry')").fetchone()[0])
            if len(done) >= total or errors:
                break
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    left = {k: v for k, v in _states(pg_schema, "c").items() if v != "succeeded"}
    assert left == {}
    assert sorted(done) == sorted(f"c{n}-{i:03}" for n in range(2) for i in range(per_enqueuer))
    assert 1 <= most <= limit


def test_racing_discarding_enqueues_of_one_key_add_at_most_its_limit(pg_schema: str) -> None:
    """Four connections enqueue 10 discarding jobs each of one key with a limit of 5: the key's
    lock serialises them, so exactly 5 are added."""
    results: "queue.Queue[int]" = queue.Queue()

    def enqueue(n: int) -> None:
        journal = PostgresJournal(PG_URL, schema=pg_schema)
        try:
            for i in range(10):
                results.put(journal.enqueue([job(f"d{n}-{i}", concurrency_key="T", concurrency_limit=5,
                                                 discard_over_limit=True)]))
        finally:
            journal.close()

    PostgresJournal(PG_URL, schema=pg_schema).close()  # migrated before the race
    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results.get() for _ in range(40)) == 5
    with pg_admin() as admin:
        assert admin.execute(f'SELECT count(*) FROM "{pg_schema}".actorq_jobs').fetchone()[0] == 5


def test_a_keys_admitted_jobs_are_counted_from_its_partial_index(pg_schema: str) -> None:
    """The count an admission and a discarding enqueue make is an index lookup, never a scan."""
    from actorq.journal._sqltext import admitted_of_key

    journal = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        journal.enqueue([job(f"o{n:05}", ordering_key=f"k{n % 1000}") for n in range(5000)]
                        + [job(f"c{n:05}", concurrency_key="T", concurrency_limit=10) for n in range(2000)]
                        + [job(f"p{n:05}") for n in range(2000)])
        with pg_admin() as admin:
            admin.execute(f'ANALYZE "{pg_schema}".actorq_jobs')
            admin.execute(f'SET search_path = "{pg_schema}"')
            plan = "\n".join(r[0] for r in admin.execute(
                "EXPLAIN SELECT " + admitted_of_key("actorq_jobs", "'c:T'")))
        assert "actorq_jobs_flow" in plan and "Seq Scan" not in plan, plan
    finally:
        journal.close()


def test_an_admission_notifies_the_admitted_jobs_queue(pg_schema: str) -> None:
    """The job a finished one admits may be in another queue: the admission NOTIFYs that
    queue on the schema's channel, as an enqueue does, so every node's dispatcher of it wakes."""
    journal = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        journal.enqueue([job("a1", ordering_key="K"), job("a2", queue="other", ordering_key="K")])
        [first] = journal.lease(["q"], "w", 1, 60.0)
        with psycopg.connect(PG_URL, autocommit=True) as listener:
            listener.execute(f'LISTEN "{pg_schema}"')
            assert journal.complete([(first.id, first.lease_id)]) == 1
            got = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0, stop_after=1)]
        assert got == [(pg_schema, "other")]
        assert journal.take_admitted() == set()  # PostgreSQL's own NOTIFY is the wake
    finally:
        journal.close()


def _keyed_after_stale_statistics(pg_schema: str) -> PostgresJournal:
    """A journal whose statistics were taken before any job had a key (they make every index
    that `state = 'blocked'` implies look empty), then 4,000 jobs of 100 keys, limit 2 each."""
    journal = PostgresJournal(PG_URL, schema=pg_schema)
    journal.enqueue([job(f"p{n:05}") for n in range(2000)])
    with pg_admin() as admin:
        admin.execute(f'ANALYZE "{pg_schema}".actorq_jobs')  # no key, no blocked job yet
    journal.enqueue([job(f"c{n:05}", concurrency_key=f"k{n % 100}", concurrency_limit=2) for n in range(4000)])
    return journal


def test_a_keyed_insert_looks_its_keys_up_on_their_index_whatever_the_statistics(pg_schema: str) -> None:
    """Statistics taken before any job had a key make every index that `state = 'blocked'`
    implies look empty; the insert of keyed jobs turns sorts off (as the enqueue does) and
    orders its lookup as actorq_jobs_flow does, so the plan stays on that index."""
    journal = _keyed_after_stale_statistics(pg_schema)
    try:
        params = postgres._enqueue_params([job("x1", concurrency_key="k1", concurrency_limit=2)], pg_schema)
        with pg_admin() as admin:
            admin.execute("BEGIN")
            admin.execute("SET LOCAL enable_sort = off")  # as `lock_flow` leaves it for the insert
            plan = "\n".join(r[0] for r in admin.execute("EXPLAIN " + postgres.statements(pg_schema).enqueue, params))
            admin.execute("ROLLBACK")
        assert "actorq_jobs_flow" in plan and "actorq_jobs_waiting" not in plan, plan
    finally:
        journal.close()


def test_a_statement_s_freed_keys_are_looked_up_on_their_index_and_never_jit_compiled(pg_schema: str) -> None:
    """The statement trigger's lookup (which freed keys have a blocked job?) runs as a generic plan
    with sorts off, as `actorq_flow_freed` runs it: with statistics taken before any key it
    stays on actorq_jobs_flow. Sorts off give its lock query's sort a cost past
    `jit_above_cost`, and a JIT compile per call (70 ms) is what the function's `jit = off`
    prevents: the setting is on the function, and that query's plan would be compiled without it."""
    journal = _keyed_after_stale_statistics(pg_schema)
    try:
        with pg_admin() as admin:
            admin.execute(f'SET search_path = "{pg_schema}"')
            admin.execute("SET plan_cache_mode = force_generic_plan")
            admin.execute("SET enable_sort = off")
            admin.execute("PREPARE blocked_of(text[]) AS SELECT u.x FROM (SELECT DISTINCT x FROM unnest($1) AS x) u"
                          " CROSS JOIN LATERAL (SELECT 1 FROM actorq_jobs b WHERE b.flow_key = u.x"
                          " AND b.state = 'blocked' ORDER BY b.flow_key, b.state, b.id LIMIT 1) f")
            lookup = "\n".join(r[0] for r in admin.execute("EXPLAIN EXECUTE blocked_of(ARRAY['c:k1', 'c:k2'])"))
            locks = "\n".join(r[0] for r in admin.execute(
                "EXPLAIN SELECT pg_advisory_xact_lock_shared(1, d.h)"
                " FROM (SELECT DISTINCT hashtext(x) AS h FROM unnest(ARRAY['a', 'b']) AS x ORDER BY h) d"))
            config = admin.execute("SELECT proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                                   " WHERE n.nspname = %s AND p.proname = 'actorq_flow_freed'",
                                   (pg_schema,)).fetchone()[0]
        assert "actorq_jobs_flow" in lookup and "actorq_jobs_waiting" not in lookup, lookup
        total = float(locks.split("\n")[0].split("cost=")[1].split("..")[1].split(" ")[0])
        assert total > 100_000, locks  # past jit_above_cost: compiled, where a JIT is installed
        assert "jit=off" in config and "enable_sort=off" in config, config
    finally:
        journal.close()


# -- kept counts and queue slots (migration 016) ----------------------------------------------------


def test_migration_016_counts_the_jobs_a_schema_holds(pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as before:  # the previous actorq: migrations 001-015
        before.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:15])
        migrate(PG_URL, pg_schema)
    with pg_admin() as admin:
        admin.execute(f'INSERT INTO "{pg_schema}".actorq_jobs (id, queue, task, payload, state, run_at, max_attempts,'
                      " finished_at) SELECT 'j' || n, CASE WHEN n % 3 = 0 THEN 'b' ELSE 'a' END, 't', '', "
                      " CASE WHEN n % 3 = 0 THEN 'ready' ELSE 'succeeded' END, now(), 3,"
                      " CASE WHEN n % 3 = 0 THEN NULL ELSE now() END FROM generate_series(1, 30) n")
    assert migrate(PG_URL, pg_schema) == [16, 17]
    journal = PostgresJournal(PG_URL, schema=pg_schema, create_schema=False)
    try:
        assert journal.counts() == journal._scan_counts() == {"a": {"succeeded": 20}, "b": {"ready": 10}}
    finally:
        journal.close()


def test_maintain_folds_the_count_deltas_and_the_past_slots(journal: PostgresJournal, pg_schema: str) -> None:
    journal.enqueue([job(f"j{n}", queue=f"q{n % 2}") for n in range(6)])
    for _ in range(2):
        leased = journal.lease(["q0", "q1"], "w", 2, 60.0)
        journal.complete([(j.id, j.lease_id) for j in leased])
    deltas = f'SELECT count(*) FROM "{pg_schema}".actorq_figure_deltas'
    with pg_admin() as admin:
        appended = admin.execute(deltas).fetchone()[0]
        # two leases of a past slot (as two statements would append them), one older than the kept
        # hour, and a row that takes the three back out of the count (the jobs are made up)
        admin.execute(f'INSERT INTO "{pg_schema}".actorq_figure_deltas (queue, state, slot, n, wait_sum, wait_max)'
                      " SELECT 'old', 'leased', CASE WHEN s = 0 THEN 0 ELSE floor(extract(epoch FROM now()) / 10) - s END,"
                      " n, w, w FROM (VALUES (3, 1.0, 1), (3, 4.0, 1), (400, 9.0, 1), (0, NULL, -3)) AS v(s, w, n)")
    assert appended >= 4  # a row per statement and (queue, state) it changed, not one per job
    before = journal.counts()
    stats = journal.queue_stats(60)
    assert {q: (s.finished, s.leased) for q, s in stats.items()} == {"q0": (2, 2), "q1": (2, 2), "old": (0, 2)}
    journal.maintain()
    with pg_admin() as admin:
        assert admin.execute(deltas).fetchone()[0] == 0
        old = admin.execute(f'SELECT finished, leased, wait_sum, wait_max FROM "{pg_schema}".actorq_queue_slots'
                            " WHERE queue = 'old'").fetchall()
    assert old == [(0, 2, 5.0, 4.0)]  # merged; the one past the hour dropped
    assert journal.counts() == before == journal._scan_counts() == {"q0": {"succeeded": 2, "ready": 1},
                                                                      "q1": {"succeeded": 2, "ready": 1}}
    def figures() -> dict[str, tuple[object, ...]]:
        return {q: tuple(s)[1:] for q, s in journal.queue_stats(60).items()}  # all but the seconds covered

    assert figures() == {q: tuple(s)[1:] for q, s in stats.items()}  # the same figures, folded
    journal.maintain()  # nothing left to fold: the same figures
    assert journal.counts() == before and figures() == {q: tuple(s)[1:] for q, s in stats.items()}


def test_the_figures_reads_never_touch_the_jobs_table(journal: PostgresJournal, pg_schema: str) -> None:
    with pg_admin() as admin:
        admin.execute(f'SET search_path TO "{pg_schema}"')
        for statement, params in ((journal._sql.counts, {}), (journal._sql.queue_stats, {"window": 60.0})):
            plan = "\n".join(r[0] for r in admin.execute("EXPLAIN " + statement, params))
            assert "actorq_jobs" not in plan and "actorq_" in plan, plan


def test_writers_on_two_sessions_keep_the_counts_without_waiting_on_each_other(pg_schema: str) -> None:
    """Two sessions moving jobs of one queue in open transactions: neither waits for the other
    (the triggers only append rows), and the counts add both up."""
    a, b = PostgresJournal(PG_URL, schema=pg_schema), PostgresJournal(PG_URL, schema=pg_schema)
    try:
        a.enqueue([job(f"j{n}") for n in range(4)])
        with a.transaction():
            got_a = a.lease(["q"], "wa", 2, 60.0)
            a.complete([(j.id, j.lease_id) for j in got_a])
            with b.transaction():  # would block here on a row lock of a per-(queue, state) total
                got_b = b.lease(["q"], "wb", 2, 60.0)
                b.complete([(j.id, j.lease_id) for j in got_b])
        assert len(got_a) == len(got_b) == 2
        assert a.counts() == a._scan_counts() == {"q": {"succeeded": 4}}
    finally:
        a.close()
        b.close()


def test_a_batch_of_more_keys_than_the_lock_table_holds_is_enqueued(pg_schema: str) -> None:
    """Each key's lock is one of 1,024 buckets: a batch of 20,000 distinct ordering keys and
    20,000 distinct unique keys takes at most 1,024 locks of each kind. With a lock per key it
    failed with "out of shared memory" (a server's lock table holds 64 per connection slot)."""
    journal = PostgresJournal(PG_URL, schema=pg_schema)
    try:
        n = 20_000
        assert journal.enqueue([job(f"k{i:05}", ordering_key=f"customer-{i}", unique_key=f"u-{i}")
                                for i in range(n)]) == n
        assert journal.counts() == {"q": {"ready": n}}
        with pg_admin() as admin:
            slots = admin.execute("SELECT current_setting('max_locks_per_transaction')::int"
                                  " * current_setting('max_connections')::int").fetchone()[0]
        assert slots < 2 * n  # the lock table could not have held a lock per key of both kinds
        leased = journal.lease(["q"], "w", 500, 60.0)
        assert journal.complete([(j.id, j.lease_id) for j in leased]) == 500  # 500 keys freed in one statement
    finally:
        journal.close()
