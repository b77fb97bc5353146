"""Journal test support: backends, the test PostgreSQL server, bounded waits, the caller's decisions.

* ``backend`` is parametrised ``sqlite`` / ``postgres`` and yields a `Backend`:
  a fresh SQLite file, or a fresh schema in the PostgreSQL server, dropped at
  teardown. ``journal`` is a journal opened on it. Contract tests use only the
  `Journal` protocol and the backend-neutral helpers here; they never ask which
  backend they got.
* PostgreSQL: the server at ``ACTORQ_TEST_PG_URL`` when it is set; otherwise a
  throwaway server of the session's own (`_ThrowawayServer`), started from the
  installed server binaries when a PostgreSQL test first needs one and removed
  when the session ends. A server already running on the machine is never used.
  Processes the tests start find the URL in ``ACTORQ_TEST_PG_URL``. Each test gets
  its own schema ``t_<pid>_<n>_<random>``. If no server can be had or psycopg is
  missing, the PostgreSQL tests **fail** with one message saying why (and what to
  install), unless ``ACTORQ_SKIP_PG=1`` is set: then they are skipped (for
  machines without PostgreSQL; CI never sets it).
* The journal stores outcomes and decides none: `fail` (an attempt that raised)
  and `crash_outcome` (an attempt lost with its owner) decide as the job runtime
  does; `reclaim`, `reclaim_all` and `expire` read the leases, decide and store,
  in one transaction, as a caller above the journal does.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import tempfile
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Sequence
from urllib.parse import urlsplit

import port_for
import pytest

from actorq.journal import Failure, JobState, Journal, LeasedJob, NewJob, open_journal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the proxy is shared with bench/
from tcp_proxy import TcpProxy  # noqa: E402  (re-exported: the journal and node tests take it from here)
from actorq.journal.contract import (  # noqa: E402,F401  (re-exported: the backend-only tests take them from here)
    HOUR, ContractBackend, MemoryBackend, crash_outcome, expire, fail, job_in_every_state, lease_one, new_job,
    reclaim, reclaim_all, state, take_back, wait_for,
)

PG_INSTALL_HINT = ("install the PostgreSQL server binaries (Debian/Ubuntu: `apt install postgresql`, "
                   "Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`)")


def _pg_ctl() -> Path | None:
    """The installed PostgreSQL's ``pg_ctl`` (on PATH, else the newest under /usr/lib/postgresql), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return candidates[-1] if candidates else None


class _ThrowawayServer:
    """A PostgreSQL of the session's own: started on first use, stopped and removed at exit.

    pytest-postgresql's executor runs ``pg_ctl initdb`` / ``start`` / ``stop`` in a temporary
    directory. The port is chosen now, so that the URL is known at import (port-for: a free
    one outside the ephemeral range, which other programs' connections do not take in the
    meantime), and the server started only when a PostgreSQL test first needs it. The executor runs ``pg_ctl`` as the current user, and
    the server refuses to run as root; so under root its ``pg_ctl`` is a two-line script in
    the temporary directory that runs the real one as an unprivileged user (``postgres``,
    else ``nobody``), which owns the directory.
    """

    def __init__(self) -> None:
        self.port = port_for.select_random()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._executor: Any = None

    def start(self) -> str | None:
        """Start the server; None when it runs, else what went wrong."""
        pg_ctl = real_pg_ctl = _pg_ctl()
        if pg_ctl is None:
            return f"no PostgreSQL server binaries found (pg_ctl); {PG_INSTALL_HINT}"
        from pytest_postgresql.executors.proc import PostgreSQLExecutor

        home = Path(tempfile.mkdtemp(prefix="actorq-test-pg-"))
        atexit.register(self._stop, home)
        if os.geteuid() == 0:
            owner = next((name for name in ("postgres", "nobody") if _user_exists(name)), None)
            if owner is None:
                return "running as root, and no unprivileged user (postgres, nobody) to run PostgreSQL as"
            shutil.chown(home, owner, owner)
            wrapper = home / "pg_ctl"
            wrapper.write_text(f'#!/bin/sh\nexec runuser -u {owner} -- "{pg_ctl}" "$@"\n')
            wrapper.chmod(0o755)
            pg_ctl = wrapper
        # fsync=off: a commit still reaches the OS before it returns, so it survives any process
        # crash the tests cause (SIGKILL of a node, a worker or the server); only a machine crash,
        # which no test makes, could lose it. Each commit's disk flush cost the suite seconds.
        self._executor = PostgreSQLExecutor(
            str(pg_ctl), "127.0.0.1", self.port, str(home / "data"), str(home), str(home / "log"),
            "-w", "postgres", user="postgres", timeout=60,
            postgres_options="-c listen_addresses=127.0.0.1 -c fsync=off")
        try:
            self._executor.start()
        except Exception as exc:  # initdb or start failed: the server's log says why
            log = home / "log"
            tail = " | ".join(log.read_text(errors="replace").split("\n")[-5:]) if log.exists() else ""
            return f"could not start a throwaway PostgreSQL with {real_pg_ctl}: {exc} {tail}".strip()
        return None

    def _stop(self, home: Path) -> None:
        if self._executor is not None and self._executor.running():
            self._executor.stop()
        shutil.rmtree(home, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


_OWN_SERVER = None if os.environ.get("ACTORQ_TEST_PG_URL") else _ThrowawayServer()
PG_URL = _OWN_SERVER.url if _OWN_SERVER else os.environ["ACTORQ_TEST_PG_URL"]
os.environ["ACTORQ_TEST_PG_URL"] = PG_URL  # processes the tests start use the same server
PG_ADDRESS = ("127.0.0.1", int(urlsplit(PG_URL).port or 5432))
"""Host and port of the test server, for tests that put a proxy in front of it."""
_schema_numbers = itertools.count(1)
_pg_problem: list[str | None] = []  # checked once per session


def _pg_unavailable() -> str | None:
    if not _pg_problem:
        try:
            import psycopg
        except ImportError:
            _pg_problem.append("psycopg is not installed (pip install -e '.[test,postgres]')")
            return _pg_problem[0]
        problem = _OWN_SERVER.start() if _OWN_SERVER is not None else None
        # a server just started may still refuse ("the database system is starting up") on a busy machine
        deadline = time.monotonic() + (30.0 if _OWN_SERVER is not None else 0.0)
        while problem is None:
            try:
                psycopg.connect(PG_URL, connect_timeout=5).close()
                break
            except psycopg.Error as exc:
                if "starting up" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                problem = f"PostgreSQL is not reachable at {PG_URL}: {' '.join(str(exc).split())}"
        _pg_problem.append(problem)
    return _pg_problem[0]


def require_pg() -> None:
    """Fail (or skip under ``ACTORQ_SKIP_PG=1``) when the test PostgreSQL is not usable."""
    problem = _pg_unavailable()
    if problem is None:
        return
    if os.environ.get("ACTORQ_SKIP_PG") == "1":
        pytest.skip(f"ACTORQ_SKIP_PG=1: {problem}")
    pytest.fail(f"{problem}. Or point ACTORQ_TEST_PG_URL at a server of your choice, or set "
                "ACTORQ_SKIP_PG=1 to skip the PostgreSQL tests.", pytrace=False)


def pg_admin() -> Any:
    """A new autocommit psycopg connection to the test server (close it)."""
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def new_schema_name() -> str:
    """A schema name no other test (or test run) uses."""
    return f"t_{os.getpid()}_{next(_schema_numbers)}_{secrets.token_hex(3)}"


def drop_schema(schema: str) -> None:
    """Drop `schema` and everything in it, ending any session still inside it."""
    with pg_admin() as admin:
        admin.execute("SET lock_timeout = '20s'")  # a test that left a transaction open fails, not hangs
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Backend(ContractBackend):
    """One fresh SQLite file or PostgreSQL schema, with the few backend-specific acts the contract needs.

    Attributes:
        name: ``sqlite`` or ``postgres``.
        url: the journal URL.
        options: keyword arguments for `open_journal` (the PostgreSQL schema).
    """

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    _opened: list[Journal] = field(default_factory=list)

    def open(self) -> Journal:
        """Open another journal (another connection) on the same place; closed at teardown."""
        journal = open_journal(self.url, busy_timeout=30.0, **self.options)
        self._opened.append(journal)
        return journal

    def raw(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one SQL statement outside the journal (``?`` placeholders, tables ``actorq_jobs``,
        ``actorq_errors`` and ``actorq_key_rules``).

        Raises the driver's own exception (sqlite3.Error or psycopg.Error).
        """
        if self.name == "sqlite":
            conn = sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None, timeout=30.0)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        schema = self.options["schema"]
        statement = statement.replace("?", "%s").replace("actorq_jobs", f'"{schema}".actorq_jobs')
        statement = statement.replace("actorq_errors", f'"{schema}".actorq_errors')
        statement = statement.replace("actorq_key_rules", f'"{schema}".actorq_key_rules')
        with pg_admin() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def backdate_finish(self, job_ids: Sequence[str], seconds: float) -> None:
        """Move the finish time of `job_ids` `seconds` into the past: jobs that finished long ago,
        without waiting (each backend stores the time its own way)."""
        marks = ", ".join("?" * len(job_ids))
        if self.name == "sqlite":
            self.raw(f"UPDATE actorq_jobs SET finished_at = finished_at - ? WHERE id IN ({marks})",
                     seconds, *job_ids)
        else:
            self.raw(f"UPDATE actorq_jobs SET finished_at = finished_at - make_interval(secs => ?::float8)"
                     f" WHERE id IN ({marks})", seconds, *job_ids)

    def integrity_error(self) -> tuple[type[BaseException], ...]:
        """The driver exceptions a constraint violation raises outside the journal."""
        if self.name == "sqlite":
            return (sqlite3.IntegrityError,)
        import psycopg

        return (psycopg.errors.IntegrityError,)

    def keep_statistics_stale(self) -> None:
        """Make sure the planner works without fresh statistics (B3): no autovacuum ANALYZE."""
        if self.name == "postgres":
            self.raw("ALTER TABLE actorq_jobs SET (autovacuum_enabled = false)")

    def other_process(self) -> None:
        """Nothing to do: another process can open this journal (the memory journal skips)."""

    def _table(self, name: str) -> str:
        return name if self.name == "sqlite" else f'"{self.options["schema"]}".{name}'

    def age_bucket(self, kind: str, name: str, seconds: float) -> None:
        """Move the token bucket of queue or task (`kind`) `name` `seconds` into the past: that much
        time has passed for its refill."""
        table, column = ("actorq_queues", "queue") if kind == "queue" else ("actorq_tasks", "name")
        self.raw(f"UPDATE {self._table(table)} SET tokens_at = tokens_at - ? WHERE {column} = ?", seconds, name)

    def age_breakers(self, seconds: float) -> None:
        """Move every circuit breaker's opening `seconds` into the past (its cool-down passes)."""
        self.raw(f"UPDATE {self._table('actorq_breakers')} SET opened_at = opened_at - ?", seconds)

    def age_keys(self, seconds: float) -> None:
        """Move every per-key rule row `seconds` into the past: its bucket refills, its breaker's
        cool-down passes, it falls due."""
        self.raw("UPDATE actorq_key_rules SET tokens_at = tokens_at - ?, opened_at = opened_at - ?,"
                 " due_at = due_at - ?, idle_at = idle_at - ?", seconds, seconds, seconds, seconds)

    def set_breaker_failures(self, times: Sequence[float]) -> None:
        """Make every breaker's recorded failures those at `times` (e.g. long ago)."""
        import json

        self.raw(f"UPDATE {self._table('actorq_breakers')} SET failed_at = ?", json.dumps(list(times)))

    def error_rows(self, job_ids: Sequence[str]) -> int:
        """How many error rows the journal keeps of `job_ids` (a pruned job's go with it)."""
        marks = ", ".join("?" * len(job_ids))
        return self.raw(f"SELECT count(*) FROM actorq_errors WHERE job_id IN ({marks})", *job_ids)[0][0]

    def close(self) -> None:
        for journal in self._opened:
            journal.close()
        self._opened.clear()


def sqlite_backend(tmp_path: Path) -> Backend:
    return Backend("sqlite", f"sqlite:///{tmp_path / 'journal.db'}")


class PasswordCatcher:
    """A fake PostgreSQL server that asks for a cleartext password and records what it gets.

    It answers the SSL/GSS probes with "no", sends AuthenticationCleartextPassword, reads
    the password message, and refuses the login (SQLSTATE 28P01). Shows which password
    libpq found (``.pgpass``, ``PGPASSFILE``, ``PGPASSWORD``, the URL) without a real
    password-protected server.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self.passwords: list[str] = []
        self.users: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except (OSError, ConnectionError):
                    pass

    def _session(self, conn: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            body = self._read(conn, length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                conn.sendall(b"N")
                continue
            break
        fields = body.split(b"\0")
        params = dict(zip(fields[0::2], fields[1::2]))
        self.users.append(params.get(b"user", b"").decode())
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        message = self._read(conn, length - 4)
        if kind == b"p":
            self.passwords.append(message.rstrip(b"\0").decode())
        error = b"SFATAL\0C28P01\0Mpassword authentication failed (fake server)\0\0"
        conn.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)

    def close(self) -> None:
        self._listener.close()


def closed_port() -> int:
    """A local TCP port that nothing listens on (connects are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def collect_group(writer: Any, ops: list[tuple[int, Any]]) -> list[tuple[Any, BaseException | None]]:
    """Submit `ops` to a journal writer so that they form one group; return each one's (result, error).

    The writer is held inside an op of its own until every op is queued; otherwise it may
    take the first few as a group of their own while the rest are still being submitted.
    """
    from actorq.jobs import journal_writer as jw

    loop = asyncio.get_running_loop()
    holding, queued = threading.Event(), threading.Event()

    def hold(_journal: object) -> None:  # alone in its group: nothing else was queued yet
        holding.set()
        queued.wait(10)

    writer.submit(jw.CALL, hold)
    await loop.run_in_executor(None, holding.wait, 10)
    futures = []
    for kind, arg in ops:
        fut = loop.create_future()
        writer.submit(kind, arg, lambda r, e, f=fut: f.set_result((r, e)))
        futures.append(fut)
    queued.set()
    return list(await asyncio.gather(*futures))
