"""The SQLite journal: one real file, WAL mode, ``synchronous=FULL`` by default.

Durability: a transition is durable once `transaction()` (or the method, when
called alone) returns. With ``synchronous=FULL`` (the default) a committed
transaction survives a crash of any process and a power or OS failure, as long
as the disk honours fsync. With ``NORMAL`` it survives process crashes only;
the last commits may roll back after a power loss.

Concurrency: one node per file. `attach_node` takes an exclusive ``flock`` on
``<file>.lock`` beside the real file (symlinks and ``..`` resolved), so a second
node is refused with `JournalLocked` however its path is spelled. Other processes
(`actorq status`, `actorq enqueue`, `actorq.Client`) may open the same file to
read or to enqueue: every write transaction is ``BEGIN IMMEDIATE`` and waits up
to ``busy_timeout`` for the lock, so readers and occasional writers never see
``SQLITE_BUSY`` in normal operation.

That wait is ours, not SQLite's (`SQLiteJournal._begin`): SQLite's own lock
wait sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so against a process
that commits thousands of times a second, taking the lock back within
microseconds of each commit, a waiter kept missing the gaps: a node's writer
beside one such producer went 1-4 s without a commit. Trying again every
50 µs, doubling to 2 ms, it finds a gap within a few tries.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import sqlite3
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Callable, ClassVar, Collection, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import quote

from actorq.errors import JournalError, JournalLocked, QueueFull
from actorq.journal import _limits
from actorq.journal._sqlitesql import ENQUEUE_COLUMNS, IN_CHUNK, RESULT_COLUMNS, in_list, numbered_list, values_rows
from actorq.journal._sqlitesql import STATEMENTS as SQL
from actorq.journal._sqltext import admitted_of_key, for_state, listing_reads
from actorq.journal.config import (
    DEFAULT_BUSY_TIMEOUT, DEFAULT_SYNCHRONOUS, DEFAULT_WAL_LIMIT_MB, MAX_SECONDS, SQLITE_PREFIX, SYNCHRONOUS_LEVELS,
    JournalConfig, check_url, redact_url,
)
from actorq.journal.protocol import (
    TERMINAL_STATES, Attempt, BreakerState, CircuitBreaker, ErrorRecord, Failure, JobDetail, JobInfo, JobResult, JobState,
    KEY_ROWS_PRUNED_PER_TICK, KEYS_PER_TICK, JobSummary, KeptResult, LeasedJob, NewJob, QueueLimits, QueueStats,
    ScheduleRow, TaskDefaults, STATS_KEEP, check_clear, check_failures, check_listing, check_prune, merge_pages,
    stats_slot, stats_slots,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 14  # 1: jobs, errors; 2: unique keys; 3: task defaults; 4: cron schedules; 5: results;
# 6: paused queues, job time limits; 7: unique periods (unique_until); 8: the index of finished jobs (retention);
# 9: queue limits (actorq_queues, the index of waiting jobs by queue);
# 10: the operator's partial index of jobs by state and queue (listings);
# 11: flow keys (blocked jobs, admission triggers); 12: rate limits (a token bucket per queue), task rules, breakers;
# 13: rules per flow key (actorq_key_rules);
# 14: kept counts per (queue, state) and per-queue slots of finishes, leases and queue waits
CHECKPOINT_MODES = ("passive", "full", "restart", "truncate")
_T = TypeVar("_T")
LOCK_FIRST_DELAY, LOCK_MAX_DELAY = 50e-6, 2e-3  # seconds between tries for the write lock (`_begin`)


def _lock_taken(exc: sqlite3.OperationalError) -> bool:
    """Whether `exc` says another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _chunks(values: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _by_lease(pairs: Sequence[tuple[str, int]]) -> dict[int, list[str]]:
    """``(job_id, lease_id)`` pairs grouped by lease: a batch holds few leases."""
    by_lease: dict[int, list[str]] = {}
    for job_id, lease_id in pairs:
        by_lease.setdefault(lease_id, []).append(job_id)
    return by_lease


# Queue limits (schema 9); only a queue listed in actorq_queues runs these.
_LIMITS_SQL = {
    # A new bucket starts full; a declared one keeps its tokens (at most the new burst), so a
    # node starting does not hand out a second burst. No rate: no bucket.
    "declare": (
        "INSERT INTO actorq_queues (queue, concurrency, max_depth, declared_at, rate, per_second, burst, tokens,"
        " tokens_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?4)"
        " ON CONFLICT (queue) DO UPDATE SET concurrency = excluded.concurrency, max_depth = excluded.max_depth,"
        " declared_at = excluded.declared_at, rate = excluded.rate, per_second = excluded.per_second,"
        " burst = excluded.burst,"
        " tokens = CASE WHEN actorq_queues.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens"
        "  ELSE min(actorq_queues.tokens, excluded.burst) END,"
        " tokens_at = CASE WHEN actorq_queues.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens_at"
        "  ELSE actorq_queues.tokens_at END"
    ),
    "read": "SELECT queue, concurrency, NULL, max_depth, rate, burst FROM actorq_queues",
    "concurrency": "SELECT concurrency, per_second, burst, tokens, tokens_at FROM actorq_queues WHERE queue = ?",
    "spend": "UPDATE actorq_queues SET tokens = ?, tokens_at = ? WHERE queue = ?",
    "max_depth": "SELECT max_depth FROM actorq_queues WHERE queue = ?",
    "present": "SELECT id FROM actorq_jobs WHERE id IN ({marks})",  # re-sent ids take no room
    # every lease of the queue, then those under the node's prefix (substr: no LIKE patterns)
    "leased": (
        "SELECT count(*), coalesce(sum(substr(lease_owner, 1, length(?2)) = ?2), 0) FROM actorq_jobs"
        " WHERE state = 'leased' AND queue = ?1"
    ),
    # the two partial indexes: actorq_jobs_ready and actorq_jobs_waiting
    "depth": (
        "SELECT (SELECT count(*) FROM actorq_jobs WHERE state = 'ready' AND queue = ?1)"
        " + (SELECT count(*) FROM actorq_jobs WHERE state IN ('blocked', 'scheduled', 'retry') AND queue = ?1)"
    ),
}


# A task's rules (schema 12); only a journal with a task declared with rules runs these.
_RULES_SQL = {
    "read": ("SELECT name, queue, priority, max_attempts, unique_for, concurrency, rate, burst, breaker_failures,"
             " breaker_window, breaker_cool_down, breaker_probes FROM actorq_tasks"
             " WHERE concurrency IS NOT NULL OR rate IS NOT NULL OR breaker_failures IS NOT NULL"),
    "rules": ("SELECT concurrency, per_second, burst, tokens, tokens_at, breaker_failures, breaker_window,"
              " breaker_cool_down, breaker_probes FROM actorq_tasks WHERE name = ?"),
    # circuit breakers: a task declared with one has a row, closed at first
    "breaker": "SELECT state, failed_at, opened_at FROM actorq_breakers WHERE task = ?",
    "breaker_put": (
        "INSERT INTO actorq_breakers (task, state, failed_at, opened_at, changed_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (task) DO UPDATE SET state = excluded.state, failed_at = excluded.failed_at,"
        " opened_at = excluded.opened_at, changed_at = excluded.changed_at"
    ),
    "breaker_declare": ("INSERT INTO actorq_breakers (task, state, changed_at) VALUES (?, 'closed', ?)"
                        " ON CONFLICT (task) DO NOTHING"),
    "breaker_drop": "DELETE FROM actorq_breakers WHERE task = ?",
    # a probe's success closes a half-open breaker: the tasks of the jobs this complete ended
    "breaker_close": (
        "UPDATE actorq_breakers SET state = 'closed', failed_at = '[]', changed_at = ?"
        " WHERE state = 'half_open' AND task IN (SELECT task FROM actorq_jobs WHERE state = 'succeeded'"
        "  AND id IN ({marks}))"
    ),
    "breakers": (
        "SELECT b.task, b.state, b.failed_at, b.opened_at, t.breaker_cool_down FROM actorq_breakers b"
        " JOIN actorq_tasks t ON t.name = b.task WHERE t.breaker_failures IS NOT NULL ORDER BY b.task"
    ),
    # every lease of the task: the leased jobs' index (the jobs in flight), filtered by task
    "leased": "SELECT count(*) FROM actorq_jobs WHERE state = 'leased' AND task = ?",
    "spend": "UPDATE actorq_tasks SET tokens = ?, tokens_at = ? WHERE name = ?",
    # ?1 lease id, ?2 owner, ?3 expiry, the queues ({marks}), then the task, then the limit
    "lease_task": SQL.lease.replace("AND queue IN ({marks})", "AND queue IN ({marks}) AND task = ?", 1),
    # the others: the ruled tasks ({tasks}) left out, after the queues
    "lease_others": SQL.lease.replace("AND queue IN ({marks})", "AND queue IN ({marks}) AND task NOT IN ({tasks})", 1),
}
if _RULES_SQL["lease_task"] == SQL.lease or _RULES_SQL["lease_others"] == SQL.lease:
    raise RuntimeError("the lease statement has no 'AND queue IN ({marks})' to narrow")


# Rules per flow key (schema 13); only a journal with a task declared with key rules runs these.
_KEYS_SQL = {
    "declare": ("UPDATE actorq_tasks SET key_rate = ?, key_burst = ?, key_breaker_failures = ?, key_breaker_window = ?,"
                " key_breaker_cool_down = ?, key_breaker_probes = ? WHERE name = ?"),
    "read": ("SELECT name, queue, priority, max_attempts, key_rate, key_burst, key_breaker_failures,"
             " key_breaker_window, key_breaker_cool_down, key_breaker_probes FROM actorq_tasks"
             " WHERE key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL"),
    # the key's first blocked job (its task's rules and its limit bound the admission), the key's
    # admitted jobs, and the (task, key)'s row if it has one
    "head": ("SELECT j.task, j.flow_limit, " + admitted_of_key('actorq_jobs', '?1')
             + ", k.tokens, k.tokens_at, k.state, k.failed_at, k.opened_at FROM actorq_jobs j"
             " LEFT JOIN actorq_key_rules k ON k.task = j.task AND k.flow_key = j.flow_key"
             " WHERE j.flow_key = ?1 AND j.state = 'blocked' ORDER BY j.id LIMIT 1"),
    # ?1 a JSON array of flow keys: each with the task of its earliest blocked job (NULL: none)
    "head_tasks": ("SELECT k.value, (SELECT j.task FROM actorq_jobs j WHERE j.flow_key = k.value AND j.state = 'blocked'"
                   " ORDER BY j.id LIMIT 1) FROM json_each(?1) k"),
    "row": "SELECT tokens, tokens_at, state, failed_at, opened_at FROM actorq_key_rules WHERE task = ? AND flow_key = ?",
    "put": (
        "INSERT INTO actorq_key_rules (task, flow_key, tokens, tokens_at, state, failed_at, opened_at, due_at,"
        " idle_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (task, flow_key) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at,"
        " state = excluded.state, failed_at = excluded.failed_at, opened_at = excluded.opened_at,"
        " due_at = excluded.due_at, idle_at = excluded.idle_at, changed_at = excluded.changed_at"
    ),
    # ?1 the key, ?2 now, ?3 how many its rules let in: its earliest blocked jobs
    "admit": (
        "UPDATE actorq_jobs SET state = CASE WHEN run_at > ?2 THEN 'scheduled' ELSE 'ready' END"
        " WHERE id IN (SELECT id FROM actorq_jobs WHERE flow_key = ?1 AND state = 'blocked' ORDER BY id LIMIT ?3)"
        " RETURNING queue, state"
    ),
    "due": "SELECT task, flow_key FROM actorq_key_rules WHERE due_at <= ? ORDER BY due_at LIMIT ?",
    "drop": "DELETE FROM actorq_key_rules WHERE task = ?",
    "undue": "UPDATE actorq_key_rules SET due_at = NULL WHERE task = ? AND flow_key = ?",
    "prune": (
        "DELETE FROM actorq_key_rules WHERE (task, flow_key) IN (SELECT task, flow_key FROM actorq_key_rules"
        " WHERE idle_at <= ? AND due_at IS NULL LIMIT ?)"
    ),
    "has_due": ("SELECT EXISTS (SELECT 1 FROM actorq_key_rules WHERE due_at <= ?1)"
                " OR EXISTS (SELECT 1 FROM actorq_key_rules WHERE idle_at <= ?1 AND due_at IS NULL)"),
    # the half-open keys of the jobs this complete ended: a probe's success closes them
    "half_open_done": (
        "SELECT k.task, k.flow_key, k.tokens, k.tokens_at, k.state, k.failed_at, k.opened_at, k.due_at"
        " FROM actorq_jobs j JOIN actorq_key_rules k ON k.task = j.task AND k.flow_key = j.flow_key"
        " WHERE j.id IN ({marks}) AND j.state = 'succeeded' AND k.state = 'half_open'"
    ),
    "not_closed": (
        "SELECT task, flow_key, tokens, tokens_at, state, failed_at, opened_at FROM actorq_key_rules"
        " WHERE state <> 'closed' ORDER BY state = 'half_open', task, flow_key LIMIT ?"
    ),
    "not_closed_counts": "SELECT state, count(*) FROM actorq_key_rules WHERE state <> 'closed' GROUP BY state",
}


def _bucket(limits: QueueLimits) -> tuple[str | None, float | None, int | None]:
    """The stored rate columns of `limits`: (rate, tokens per second, burst), or Nones."""
    if limits.rate is None:
        return None, None, None
    rate = _limits.parse_rate(limits.rate, limits.burst)
    return limits.rate, rate.per_second, rate.burst


def _schema_sql(version: int) -> str:
    return resources.files("actorq.journal").joinpath(f"sql/sqlite_v{version}.sql").read_text()


_HELD = 1 << 40  # an ordinal past every limit: the enqueue leaves the row blocked


def _enqueue_row(job: NewJob, now: float, nth: int) -> tuple[object, ...]:
    """The bound values of `job`'s row of `enqueue` (`ENQUEUE_COLUMNS`); `nth`: how many jobs
    of its flow key come before it in the batch (see `_limits.key_ordinals`)."""
    return (
        job.id, job.queue, job.task, job.payload,
        JobState.SCHEDULED if job.run_at is not None and job.run_at > now else JobState.READY,
        job.priority, job.run_at if job.run_at is not None else now, job.max_attempts, now, job.unique_key,
        job.timeout, None if job.unique_for is None else now + job.unique_for,
        job.flow_key, job.flow_limit, 1 if job.discard_over_limit else 0, nth,
    )


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script, whole (a trigger's body holds semicolons)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


class SQLiteJournal:
    """A `Journal` on one SQLite file.

    Args:
        path: the database file; created with its schema if missing (unless `create` is False).
        synchronous: ``"full"`` (default), ``"normal"`` or ``"extra"``.
        busy_timeout: seconds a write waits for another process's lock (> 0, at most a day).
        wal_limit_mb: the WAL size (MB) past which `maintain` runs a TRUNCATE checkpoint.
        clock: wall clock returning Unix seconds (injectable for tests).
        create: False: a missing file is an error, not a new journal (for commands that
            only read, such as ``actorq status``).

    Raises:
        ValueError: `synchronous` is unknown, or `busy_timeout` out of its range.
        JournalError: the file cannot be opened or written (the message names the
            path and the permission needed), does not exist and `create` is False, is
            not an actorq journal, or has a newer schema than this version knows.
    """

    shared: ClassVar[bool] = False
    """One node per file: `attach_node` takes the file's node lock."""
    notifies: ClassVar[bool] = False
    """No wake-ups from other processes: the node polls."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        wal_limit_mb: float = DEFAULT_WAL_LIMIT_MB,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_LEVELS}, got {synchronous!r}")
        if not 0 < busy_timeout <= MAX_SECONDS:  # SQLite takes it as an int of milliseconds
            raise ValueError(f"busy_timeout must be seconds > 0 and <= {MAX_SECONDS:.0f}, got {busy_timeout!r}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self.wal_limit_mb = wal_limit_mb
        self._clock = clock
        self._lock_fd: int | None = None
        self._in_tx = False
        self._busy_ms = int(busy_timeout * 1000)
        self._queues = _limits.LimitsCache()
        self._rules = _limits.LimitsCache()  # the tasks declared with rules, read again every 5 s
        self._key_rules = _limits.LimitsCache()  # the tasks declared with rules per key, the same way
        self.rate_wait: float | None = None
        """After a lease: seconds until the next token of a rate it found empty (None: no bucket ran out)."""
        self.lock_waits = 0
        """Write transactions that found the lock taken and waited for it (`_begin`)."""
        self.applied_versions: list[int] = []
        """Schema versions this open created ([] when the file already had its schema)."""
        # mode=rw opens an existing file only; the plain path creates a missing one
        target = self.path if create else f"file:{quote(os.path.abspath(self.path))}?mode=rw"
        try:
            self._conn = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, timeout=busy_timeout, uri=not create
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(f"{self.path}: could not switch to WAL mode (got {mode!r})")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            # a statement inside a larger transaction keeps its own undo journal (a multi-row
            # UPDATE, one with triggers): in memory, not a temporary file written at every
            # statement (10 us of an admission's 40 us); temporary sorts too
            self._conn.execute("PRAGMA temp_store = MEMORY")
            # flow keys (schema 11): the triggers name each key a statement freed a slot of (or
            # put a job of back blocked); `_admit_freed` admits their next jobs before COMMIT
            self._freed: set[str] = set()
            self._admitted: set[str] = set()  # queues a keyed job was made ready in (`take_admitted`)
            self._conn.create_function("actorq_flow_freed", 1, self._freed.add)
            # rows per multi-row INSERT: 500, or fewer where SQLite allows fewer bound parameters
            limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._rows_per_insert = max(1, min(500, limit // ENQUEUE_COLUMNS))
            self._migrate()
        except BaseException as exc:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error) and not create and not self.path.exists():
                raise JournalError(f"journal {self.path} does not exist: nothing was enqueued to it yet, "
                                   "or journal.url names another file") from None
            if isinstance(exc, sqlite3.DatabaseError):
                raise JournalError(self._explain(exc)) from exc
            raise

    @classmethod
    def from_config(cls, config: JournalConfig, *, create: bool = True) -> SQLiteJournal:
        """Open the file of `config.url` (a relative path is the CWD's), with its SQLite settings.

        Args:
            config: the ``[journal]`` settings.
            create: False: refuse a missing file instead of creating it.

        Raises:
            ValueError: `config.url` is not an SQLite URL with a path, or `synchronous` is unknown.
            JournalError: as the constructor.
        """
        if not check_url(config.url).startswith(SQLITE_PREFIX):
            raise ValueError(f"not an SQLite journal URL: {redact_url(config.url)!r}")
        return cls(config.url[len(SQLITE_PREFIX):], synchronous=config.synchronous,
                   busy_timeout=config.busy_timeout, wal_limit_mb=config.wal_limit_mb, create=create)

    def _error(self, exc: sqlite3.Error) -> JournalError:
        """`exc` as a `JournalError`: a refused row is ``refused``, a lock wait past
        ``busy_timeout`` is ``transient``."""
        text = str(exc)
        return JournalError(self._explain(exc), refused=isinstance(exc, sqlite3.IntegrityError),
                            transient="locked" in text or "busy" in text)

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "readonly" in text or "unable to open" in text:
            return (
                f"cannot open journal {self.path}: {text}; actorq needs read and write "
                f"permission on the file and on its directory {self.path.parent}"
            )
        if "full" in text:
            return (f"journal {self.path} is full ({text}): the write was not committed; "
                    "free disk space (or raise max_page_count) and send again")
        if "not a database" in text or "malformed" in text:
            return f"journal {self.path} is not a valid SQLite database: {text}"
        return f"journal {self.path}: {text}"

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}; this actorq knows "
                f"versions up to {SCHEMA_VERSION}. Upgrade actorq to use it."
            )
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            current = self._conn.execute("PRAGMA user_version").fetchone()[0]  # again, under the lock
            if current == 0:
                tables = self._conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'actorq_jobs'"
                ).fetchone()[0]
                if tables:
                    raise JournalError(f"{self.path}: has an actorq_jobs table but no schema version")
            applied = list(range(current + 1, SCHEMA_VERSION + 1))
            for step in applied:
                for statement in _statements(_schema_sql(step)):
                    self._conn.execute(statement)
            if applied:
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.applied_versions = applied
                logger.info("journal %s: schema versions %s applied", self.path, applied)

    # -- transactions ----------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; nested use joins the outer transaction.

        Raises:
            JournalError: the commit failed (full disk, I/O error); nothing inside was committed.
        """
        if self._in_tx:
            if not self._conn.in_transaction:
                # SQLite rolled the whole transaction back after an earlier error (SQLITE_FULL,
                # SQLITE_IOERR): refuse to go on, or the next statements would autocommit alone.
                raise JournalError(f"journal {self.path}: the transaction was rolled back by an earlier error")
            try:
                yield
            except sqlite3.Error as exc:  # one statement failed; the caller decides about the rest
                raise self._error(exc) from exc
            return
        conn = self._conn
        try:
            self._begin()
        except sqlite3.Error as exc:  # the lock stayed taken past busy_timeout: transient
            raise self._error(exc) from exc
        self._in_tx = True
        try:
            yield
            if self._freed:
                self._admit_freed()
            conn.execute("COMMIT")
        except BaseException as exc:
            self._freed.clear()
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite may have rolled back already (SQLITE_FULL)
                    pass
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise
        finally:
            self._in_tx = False

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting up to ``busy_timeout`` for the write lock in short steps
        (50 µs, doubling to 2 ms) rather than in SQLite's (up to 100 ms), which another
        process committing often would keep winning.

        Raises:
            sqlite3.OperationalError: the lock stayed taken for ``busy_timeout`` (or another error).
        """
        conn = self._conn
        conn.execute("PRAGMA busy_timeout = 0")  # SQLite's own wait off for this statement only
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _lock_taken(exc):
                    raise
            self.lock_waits += 1
            deadline = time.monotonic() + self._busy_ms / 1000
            delay = LOCK_FIRST_DELAY
            while True:
                time.sleep(delay * (0.5 + random.random()))  # spread: two waiters do not try in step
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _lock_taken(exc) or time.monotonic() >= deadline:
                        raise
                delay = min(delay * 2, LOCK_MAX_DELAY)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A read: SQLite's errors (a damaged page, an I/O error) become `JournalError`, naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(self._explain(exc)) from exc

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        """All of the block or none of it, inside the transaction: a statement that fails after
        others (a refused row of an executemany) leaves nothing of the block behind."""
        self._conn.execute("SAVEPOINT actorq_op")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK TO SAVEPOINT actorq_op")
                self._conn.execute("RELEASE SAVEPOINT actorq_op")
            raise
        self._conn.execute("RELEASE SAVEPOINT actorq_op")

    def attach_node(self) -> None:
        """Take the node lock ``<file>.lock`` (flock, released when the process dies).

        The lock is named from the real path of the file (`os.path.realpath`): a node
        given a symlink to the journal, ``dir/../journal.db`` or a relative spelling of
        it takes the same lock as one given the plain path (E11).

        Raises:
            JournalLocked: another node holds the lock.
            JournalError: the lock file or the journal cannot be written (the message
                names the path and the permission needed), or the file fails SQLite's
                ``quick_check`` (E7: a node never starts on a damaged journal).
        """
        if self._lock_fd is not None:
            return
        lock_path = Path(f"{os.path.realpath(self.path)}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(
                f"cannot open the node lock {lock_path}: {exc.strerror}; actorq needs read and write "
                f"permission on it and on its directory {lock_path.parent}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"another node is running on journal {self.path} (it holds {lock_path}); "
                "SQLite allows one node per file: stop it, or use a PostgreSQL journal for several nodes"
            ) from None
        try:
            # E7: a node never starts silently on a damaged file (flipped bytes, a torn copy)
            problems = self._quick_check()
            if problems:
                raise JournalError(
                    f"journal {self.path} failed its integrity check ({'; '.join(problems)}); the node will "
                    "not run on it: restore it from a backup, or move it aside to start a new journal")
            # SQLite opens a write-protected file read-only without a word; a node must find
            # out now (E8), not at its first enqueue. Rewriting user_version is a real write.
            with self.transaction():
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except JournalError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check``: [] when the file is sound, else the first problems."""
        try:
            rows = [str(row[0]) for row in self._conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.Error as exc:
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    # -- transitions -------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], *, refused: list[tuple[NewJob, QueueFull]] | None = None) -> int:
        """Insert `jobs` as ready, or scheduled when `run_at` is in the future.

        Ids already present are skipped (idempotent re-send), and so are jobs whose unique
        key is held (see `Journal.enqueue`). A queue's ``max_depth`` is checked in the
        same transaction (see `Journal.enqueue`). Returns the number inserted.

        Raises:
            QueueFull: a job would take its queue past ``max_depth`` (`refused` not given).
        """
        with self.transaction():
            full = _limits.depth_limited(self._stored_limits(), jobs)
            if full:
                ids = [j.id for j in jobs if j.queue in full]
                present = {row[0] for chunk in _chunks(ids) for row in self._conn.execute(
                    _LIMITS_SQL["present"].format(marks=in_list(len(chunk))), chunk)}
                jobs = _limits.admit(jobs, self._rooms(full), refused, present)
            return self._insert(jobs)

    def _rooms(self, queues: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``{queue: (waiting jobs, max_depth)}`` read in the write transaction."""
        rooms: dict[str, tuple[int, int]] = {}
        for queue in queues:
            row = self._conn.execute(_LIMITS_SQL["max_depth"], (queue,)).fetchone()
            if row is not None and row[0] is not None:
                rooms[queue] = (self._conn.execute(_LIMITS_SQL["depth"], (queue,)).fetchone()[0], row[0])
        return rooms

    def _insert(self, jobs: Sequence[NewJob]) -> int:
        now = self._clock()
        keyed = any(j.flow_key is not None for j in jobs)
        if keyed:  # a batch's keyed jobs are admitted in id order
            jobs = sorted(jobs, key=lambda j: j.id)
        rest = [j for j in jobs if not j.discard_over_limit]
        alone = [j for j in jobs if j.discard_over_limit]  # discarding jobs: one statement each, after the others
        ruled = self._key_rules.get(self.key_rules) if keyed else {}
        with self.transaction():
            added = 0
            for chunk in _chunks(rest, self._rows_per_insert):  # multi-row VALUES
                ordinals, again = _limits.key_ordinals(chunk)  # counted within the statement
                keys: set[str] = set()
                if ruled:  # a task's keyed jobs with rules per key go in blocked; its rules admit them after
                    held = [j.flow_key is not None and j.task in ruled for j in chunk]
                    ordinals = [_HELD if hold else nth for nth, hold in zip(ordinals, held)]
                    keys.update(j.flow_key for j, hold in zip(chunk, held) if hold)  # type: ignore[misc]
                params = [value for job, nth in zip(chunk, ordinals) for value in _enqueue_row(job, now, nth)]
                inserted = self._conn.execute(SQL.enqueue.format(marks=values_rows(len(chunk))), params).rowcount
                if inserted < len(chunk):  # a row skipped: an ordinal may count a job that is not there
                    keys.update(again)
                self._admit(keys, now)
                added += inserted
            for job in alone:  # each one's count of its key sees the jobs added and admitted before it
                added += self._conn.execute(SQL.enqueue.format(marks=values_rows(1)),
                                            _enqueue_row(job, now, _HELD if job.task in ruled else 0)).rowcount
                self._admit([job.flow_key], now)  # type: ignore[list-item]
            return added

    def _admit_freed(self) -> None:
        """Admit the next jobs of the flow keys this transaction's statements freed (the
        triggers of schema 11 named them); only keys with a blocked job run the admission."""
        freed = sorted(self._freed)
        self._freed.clear()  # in place: the SQL function holds this set's `add`
        keys = [row[0] for chunk in _chunks(freed) for row in self._conn.execute(
            SQL.blocked_keys.format(marks=in_list(len(chunk))), chunk)]
        self._admit(keys, self._clock())

    def _admit(self, keys: Collection[str], now: float) -> int:
        """Fill the free slots of `keys` from their blocked jobs, in id order; note the queues
        that got a ready job for `take_admitted`. A key whose first blocked job's task has rules
        per key is admitted within them (`_admit_ruled`). Returns how many were made ready."""
        ruled = self._key_rules.get(self.key_rules) if keys else {}
        ready = 0
        plain = sorted(keys)
        if ruled:  # the keys whose earliest blocked job's task has rules per key go one by one
            heads = self._conn.execute(_KEYS_SQL["head_tasks"], (json.dumps(plain),)).fetchall()
            plain = [key for key, task in heads if task is not None and task not in ruled]
            for key in [key for key, task in heads if task in ruled]:
                head = self._conn.execute(_KEYS_SQL["head"], (key,)).fetchone()
                if head is not None:
                    ready += self._admit_ruled(key, ruled[head[0]], head[1], head[2],
                                               None if head[5] is None else _limits.KeyRow(*head[3:]), now)
        if plain:  # every other key by one statement
            for queue, state in self._conn.execute(SQL.admit, (json.dumps(plain), now)):
                if state == JobState.READY:
                    self._admitted.add(queue)
                    ready += 1
        return ready

    def _admit_ruled(self, key: str, rules: TaskDefaults, limit: int, admitted: int, stored: _limits.KeyRow | None,
                     now: float) -> int:
        """Admit `key`'s blocked jobs into its free slots within its rules (a token each from its
        bucket, its breaker closed or half-open with probes left); store its row with when its
        rules let more in (due_at, for `promote`)."""
        if limit - admitted <= 0:  # no free slot: a job of the key finishing comes back here
            return 0
        room, row, wait = _limits.key_room(rules, stored, now, limit - admitted, admitted)
        got = self._conn.execute(_KEYS_SQL["admit"], (key, now, room)).fetchall() if room > 0 else []
        row, due, idle = _limits.key_spent(rules, row, len(got), now, wait)
        self._conn.execute(_KEYS_SQL["put"], (rules.name, key, *row, due, idle, now))
        ready = 0
        for queue, state in got:
            if state == JobState.READY:
                self._admitted.add(queue)
                ready += 1
        return ready

    def key_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its per-key rules}`` of every declared task with a key rate or a key breaker."""
        with self._reading():
            return {row[0]: _limits.key_rules_of(row) for row in self._conn.execute(_KEYS_SQL["read"])}

    def key_breakers(self, limit: int) -> tuple[list[BreakerState], dict[str, int]]:
        """The per-key breakers not closed: at most `limit`, and how many by state (see `Journal.key_breakers`)."""
        ruled = self._key_rules.get(self.key_rules)
        with self._reading():
            rows = self._conn.execute(_KEYS_SQL["not_closed"], (max(0, limit),)).fetchall()
            counts = dict(self._conn.execute(_KEYS_SQL["not_closed_counts"]).fetchall())
        return _limits.key_breaker_listing(rows, counts, ruled)

    def _keys_failed(self, failed: Sequence[tuple[str, str]], now: float) -> None:
        """Count a failed attempt of each (task, key) whose task has a key breaker."""
        ruled = self._key_rules.get(self.key_rules)
        for task, key in failed:
            rules = ruled.get(task)
            if rules is None or rules.key_circuit_breaker is None:
                continue
            stored = self._conn.execute(_KEYS_SQL["row"], (task, key)).fetchone()
            before = None if stored is None else _limits.KeyRow(*stored)
            row, due, idle = _limits.key_failed(rules, before, now)
            self._conn.execute(_KEYS_SQL["put"], (task, key, *row, due, idle, now))
            _limits.log_key_opened(logger, task, key, before, row)

    def _keys_succeeded(self, job_ids: Sequence[str], now: float) -> None:
        """Close the half-open key breakers of the jobs of `job_ids` that succeeded."""
        ruled = self._key_rules.get(self.key_rules)
        for chunk in _chunks(job_ids):
            for task, key, *stored, due in self._conn.execute(
                    _KEYS_SQL["half_open_done"].format(marks=in_list(len(chunk))), chunk).fetchall():
                if task not in ruled:
                    continue
                row = _limits.KeyRow(*stored)._replace(state=_limits.CLOSED, failed_at="[]")
                self._conn.execute(_KEYS_SQL["put"], (task, key, *row, due, _limits.key_idle_at(ruled[task], row, now),
                                                      now))

    def _admit_due_keys(self, now: float) -> int:
        """Admit the keys whose rules let them through again (at most `KEYS_PER_TICK`), then
        delete idle key rows (at most `KEY_ROWS_PRUNED_PER_TICK`); returns the jobs made ready."""
        due = self._conn.execute(_KEYS_SQL["due"], (now, KEYS_PER_TICK)).fetchall()
        self._conn.executemany(_KEYS_SQL["undue"], due)
        ready = self._admit({key for _, key in due}, now)
        self._conn.execute(_KEYS_SQL["prune"], (now, KEY_ROWS_PRUNED_PER_TICK))
        return ready

    def take_admitted(self) -> set[str]:
        """The queues keyed jobs were admitted to (made ready) since the last call: a job of
        their key ended. The writer wakes their dispatchers (see `Journal.take_admitted`)."""
        admitted, self._admitted = self._admitted, set()
        return admitted

    def holders(self, keys: Sequence[str]) -> dict[str, str]:
        """``{unique key: id of the job holding it}`` for those of `keys` that are held (see `Journal.holders`)."""
        found: dict[str, str] = {}
        now = self._clock()
        with self._reading():
            for chunk in _chunks(list(dict.fromkeys(keys))):
                rows = self._conn.execute(SQL.holders.format(marks=numbered_list(len(chunk))), (now, *chunk))
                found.update((key, job_id) for key, job_id, _live in rows)
        return found

    def lease(self, queues: Sequence[str], owner: str, limit: int, lease_for: float) -> list[LeasedJob]:
        """Lease up to `limit` ready jobs of `queues` to `owner` for `lease_for` s, counting an attempt each.

        Jobs are chosen by priority, then id; the returned list is in no particular order.
        """
        self.rate_wait = None
        if limit <= 0 or not queues:
            return []
        now = self._clock()
        lease_id = random.getrandbits(62) + 1
        lease = (lease_id, owner, now + lease_for)
        with self.transaction():
            rows: list[Sequence[object]] = []
            ruled = _limits.lease_ruled(self._rules.get(self.task_rules), queues)
            limited = self._queues.lease_limited(self._stored_limits(), queues)
            if limited:  # each limited queue alone, at most its room; then the others together
                for queue in limited:
                    take, bucket = self._lease_room(queue, limit - len(rows), now)
                    got = self._lease_some([queue], take, ruled, lease, now) if take > 0 else []
                    rows += got
                    if bucket is not None:
                        self._spend(_LIMITS_SQL["spend"], queue, bucket, len(got), now)
                limit -= len(rows)
                queues = [q for q in queues if q not in limited]
            if limit > 0 and queues:
                rows += self._lease_some(queues, limit, ruled, lease, now)
            self._lease_slots(rows, now)
        # RETURNING gives a whole REAL back as an int (30, not 30.0): the protocol says float
        return [LeasedJob(*row[:6], lease_id, None if row[6] is None else float(row[6])) for row in rows]

    def _lease_slots(self, rows: Sequence[Sequence[object]], now: float) -> None:
        """Add these leases and their queue waits (now less each job's run_at) to their queues' slot."""
        for queue, (taken, wait_sum, wait_max) in _limits.lease_waits(rows, now).items():
            self._conn.execute(SQL.lease_slot, (queue, stats_slot(now), taken, wait_sum, wait_max))

    def _lease_some(self, queues: Sequence[str], limit: int, ruled: Sequence[str], lease: tuple[int, str, float],
                    now: float) -> list[Sequence[object]]:
        """Lease up to `limit` of `queues`: without `ruled` tasks, today's one statement; with,
        each ruled task's room read, then the jobs of those whose rule binds (a room below
        `limit`) by a statement each within it, then the others by the one statement, those
        tasks' jobs left out. A rule that does not bind adds only its reads."""
        marks = in_list(len(queues))
        if not ruled:
            return self._conn.execute(SQL.lease.format(marks=marks), (*lease, *queues, limit)).fetchall()
        rooms: dict[str, int] = {}  # the tasks whose rule binds in this lease: their room
        buckets: dict[str, tuple[float, float]] = {}
        for task in ruled:
            take, bucket = self._task_room(task, limit, now)
            if bucket is not None:
                buckets[task] = bucket
            if take < limit:
                rooms[task] = take
        rows: list[Sequence[object]] = []
        for task, room in rooms.items():
            if room > 0 and len(rows) < limit:
                rows += self._conn.execute(_RULES_SQL["lease_task"].format(marks=marks),
                                           (*lease, *queues, task, min(room, limit - len(rows)))).fetchall()
        if len(rows) < limit:
            if rooms:
                rows += self._conn.execute(_RULES_SQL["lease_others"].format(marks=marks, tasks=in_list(len(rooms))),
                                           (*lease, *queues, *rooms, limit - len(rows))).fetchall()
            else:
                rows += self._conn.execute(SQL.lease.format(marks=marks), (*lease, *queues, limit)).fetchall()
        for task, bucket in buckets.items():  # each bucket pays for its task's jobs
            self._spend(_RULES_SQL["spend"], task, bucket, sum(1 for r in rows if r[2] == task), now)
        return rows

    def _task_room(self, task: str, limit: int, now: float) -> tuple[int, tuple[float, float] | None]:
        """How many jobs of `task` a lease may take now, and its bucket refilled to `now`."""
        row = self._conn.execute(_RULES_SQL["rules"], (task,)).fetchone()
        if row is None:  # no longer declared with rules (the cache is older): no bound of its own
            return limit, None
        concurrency, per_second, burst, tokens, tokens_at, *breaker_columns = row
        breaker = _limits.breaker_of(*breaker_columns)
        if breaker is not None and limit > 0:
            limit = min(limit, self._breaker_room(task, breaker, limit, now))
        bucket = None
        if per_second is not None:
            bucket = (_limits.refill(tokens, tokens_at, now, per_second, burst), per_second)
            limit = min(limit, _limits.whole(bucket[0]))
        if concurrency is not None and limit > 0:
            limit = min(limit, concurrency - self._conn.execute(_RULES_SQL["leased"], (task,)).fetchone()[0])
        return max(0, limit), bucket

    def _breaker_room(self, task: str, breaker: CircuitBreaker, limit: int, now: float) -> int:
        """What `task`'s breaker lets a lease take: all (closed), none (open: `rate_wait` says
        when its cool-down ends), its probes less its leased jobs (half-open, which an open
        breaker past its cool-down becomes here)."""
        state_row = self._conn.execute(_RULES_SQL["breaker"], (task,)).fetchone()
        if state_row is None:
            return limit
        state, failed_at, opened_at = state_row
        leased = 0
        if state != _limits.CLOSED:
            leased = self._conn.execute(_RULES_SQL["leased"], (task,)).fetchone()[0]
        room, now_state, wait = _limits.breaker_room(breaker, state, opened_at, now, leased)
        if now_state != state:
            self._conn.execute(_RULES_SQL["breaker_put"], (task, now_state, failed_at, opened_at, now))
            logger.info("task %s: circuit breaker half-open (%d probes)", task, breaker.probes)
        self.rate_wait = _limits.sooner(self.rate_wait, wait)
        return limit if room is None else room

    def _lease_room(self, queue: str, limit: int, now: float) -> tuple[int, tuple[float, float] | None]:
        """How many of `queue` a lease may take now (in the write transaction: one writer at a
        time), and its bucket refilled to `now` as ``(tokens, per_second)`` if it has a rate."""
        row = self._conn.execute(_LIMITS_SQL["concurrency"], (queue,)).fetchone()
        concurrency, per_second, burst, tokens, tokens_at = (None,) * 5 if row is None else row
        bucket = None
        if per_second is not None:
            bucket = (_limits.refill(tokens, tokens_at, now, per_second, burst), per_second)
            limit = min(limit, _limits.whole(bucket[0]))
        node_limit = self._queues.node.get(queue)
        if concurrency is None and node_limit is None:
            return max(0, limit), bucket
        leased, node_leased = self._conn.execute(_LIMITS_SQL["leased"], (queue, self._queues.node_prefix)).fetchone()
        return _limits.room(limit, concurrency, node_limit, leased, node_leased), bucket

    def _spend(self, statement: str, name: str, bucket: tuple[float, float], taken: int, now: float) -> None:
        """Write back what a lease of `taken` jobs left in the bucket of `name` (a queue or a
        task); note when the next token is due if the lease found none left (`rate_wait`)."""
        tokens, per_second = bucket
        left = tokens - taken
        if taken:  # nothing taken: the stored tokens refill to the same value later
            self._conn.execute(statement, (left, now, name))
        self.rate_wait = _limits.sooner(self.rate_wait, _limits.bucket_wait(left, per_second))

    def _stored_limits(self) -> dict[str, QueueLimits]:
        return self._queues.get(self.queue_limits)

    def declare_queues(self, limits: Sequence[QueueLimits], node_prefix: str = "") -> None:
        """Store `limits` (each replaces its queue's row) and keep their ``node_concurrency``
        for this journal's leases (one node per file: every lease is this node's).

        Raises:
            ValueError: a limit is not an integer from 1 to `MAX_QUEUE_LIMIT` (or None).
        """
        _limits.check_limits(limits)
        now = self._clock()
        with self.transaction():
            self._conn.executemany(_LIMITS_SQL["declare"], [(q.queue, q.concurrency, q.max_depth, now, *_bucket(q))
                                                            for q in limits])
        self._queues.node = {q.queue: q.node_concurrency for q in limits if q.node_concurrency is not None}
        self._queues.node_prefix = node_prefix
        self._queues.forget()

    def queue_limits(self) -> dict[str, QueueLimits]:
        """``{queue: stored limits}`` of every declared queue."""
        with self._reading():
            return {row[0]: QueueLimits(*row) for row in self._conn.execute(_LIMITS_SQL["read"])}

    def complete(self, acks: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None,
                 results: Mapping[str, KeptResult] | None = None) -> int:
        """Move ``(job_id, lease_id)`` pairs to succeeded; returns how many were current (the rest were stale).

        The jobs named in `results` store their return value in the same statement.
        `busy` is never added to: the file's one writer holds every row it reads.
        """
        if not acks:
            return 0
        now = self._clock()
        accepted = 0
        original = acks
        with self.transaction():
            if results:
                plain = []
                rows: list[object] = []
                for job_id, lease_id in acks:
                    kept = results.get(job_id)
                    if kept is None:
                        plain.append((job_id, lease_id))
                    else:
                        rows += (job_id, lease_id, kept[0], kept[1])
                for chunk in _chunks(rows, IN_CHUNK * RESULT_COLUMNS):
                    accepted += self._conn.execute(
                        SQL.complete_with_result.format(marks=values_rows(len(chunk) // RESULT_COLUMNS, RESULT_COLUMNS)),
                        (now, *chunk)).rowcount
                acks = plain
            for lease_id, ids in _by_lease(acks).items():  # one statement per lease: see SQL.complete
                for chunk in _chunks(ids):
                    accepted += self._conn.execute(
                        SQL.complete.format(marks=in_list(len(chunk))), (now, lease_id, *chunk)).rowcount
            if any(t.key_circuit_breaker is not None for t in self._key_rules.get(self.key_rules).values()):
                self._keys_succeeded(list(dict.fromkeys(job_id for job_id, _ in original)), now)
            if any(t.circuit_breaker is not None for t in self._rules.get(self.task_rules).values()):
                done = list(dict.fromkeys(job_id for job_id, _ in original))
                for chunk in _chunks(done):  # a probe's success closes its half-open breaker
                    self._conn.execute(_RULES_SQL["breaker_close"].format(marks=in_list(len(chunk))), (now, *chunk))
        return accepted

    def fail(self, failures: Sequence[Failure]) -> int:
        """Store each decided outcome whose lease is current (see `Journal.fail`); returns how many.

        Raises:
            ValueError: a state `fail` does not store, or RETRY without retry_at; nothing is recorded.
        """
        check_failures(failures)
        now = self._clock()
        accepted = 0
        failed_tasks: list[str] = []
        failed_keys: list[tuple[str, str]] = []
        with self.transaction():
            for f in failures:
                row = self._conn.execute(SQL.fail, (
                    JobState(f.state).value, f.retry_at if f.state == JobState.RETRY else None,
                    now if f.state in TERMINAL_STATES else None, f.error, f.job_id, f.lease_id, f.traceback,
                )).fetchone()
                if row is not None:
                    accepted += 1
                    self._conn.execute(SQL.fail_error, (f.job_id, row[0], now, f.error))
                    failed_tasks.append(row[1])
                    if row[2] is not None:
                        failed_keys.append((row[1], row[2]))
            if failed_tasks and self._rules.get(self.task_rules):  # no rules: nothing more
                self._breakers_failed(failed_tasks, now)
            if failed_keys and self._key_rules.get(self.key_rules):
                self._keys_failed(failed_keys, now)
        return accepted

    def release(self, leases: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None) -> int:
        """Return leased jobs that never started to ready, giving their attempt back; returns rows moved.

        `busy` is never added to (see `complete`).
        """
        if not leases:
            return 0
        with self.transaction():
            # rowcount, not total_changes: that counts the counts triggers' writes too
            return self._conn.executemany(SQL.release, list(leases)).rowcount

    def attempts(self, leases: Sequence[tuple[str, int]], *,
                 busy: list[tuple[str, int]] | None = None) -> list[Attempt]:
        """The ``(job_id, lease_id)`` pairs whose lease is current, in no particular order.

        `busy` is never added to (see `complete`).
        """
        found: list[Attempt] = []
        for lease_id, ids in _by_lease(leases).items():
            for chunk in _chunks(ids):
                found += self._attempts(SQL.attempts.format(marks=in_list(len(chunk))), (lease_id, *chunk))
        return found

    def leased_by(self, owner: str, *, keep: Collection[int] = ()) -> list[Attempt]:
        """Every current lease of `owner` except the lease ids in `keep`."""
        return self._attempts(SQL.leased_by, (owner, json.dumps(sorted(keep))))

    def leased_with_prefix(self, prefix: str) -> list[Attempt]:
        """Every current lease whose owner starts with `prefix` (compared literally; "" = all)."""
        return self._attempts(SQL.leased_with_prefix, (prefix,))

    def expired(self) -> list[Attempt]:
        """Every lease whose expiry has passed by the journal's (injected) clock."""
        return self._attempts(SQL.expired, (self._clock(),))

    def _attempts(self, query: str, params: Sequence[object]) -> list[Attempt]:
        with self._reading():
            return [Attempt(*row) for row in self._conn.execute(query, params).fetchall()]

    def declare_tasks(self, tasks: Sequence[TaskDefaults]) -> None:
        """Record the defaults of `tasks`, replacing earlier declarations (the last of a name wins).

        Raises:
            JournalError: a declaration was refused (``max_attempts`` below 1); none is recorded.
        """
        latest = {t.name: t for t in tasks}  # the last of a name wins, in a batch as across nodes
        if not latest:
            return
        _limits.check_task_rules(list(latest.values()))
        now = self._clock()
        had_keys = self._key_rules.get(self.key_rules)
        with self.transaction(), self._savepoint():
            # declared again without rules per key: its keys' rows go
            self._conn.executemany(_KEYS_SQL["drop"], [(t.name,) for t in latest.values()
                                                       if t.name in had_keys and not _limits.has_key_rules(t)])
            self._conn.executemany(SQL.declare_tasks, [
                (t.name, t.queue, t.priority, t.max_attempts, t.unique_for, now, t.concurrency, *_limits.task_bucket(t),
                 *_limits.breaker_columns(t), t.concurrency_limit, t.on_conflict) for t in latest.values()])
            self._conn.executemany(_KEYS_SQL["declare"], [(*_limits.key_columns(t), t.name) for t in latest.values()])
            self._conn.executemany(_RULES_SQL["breaker_declare"],
                                   [(t.name, now) for t in latest.values() if t.circuit_breaker is not None])
            self._conn.executemany(_RULES_SQL["breaker_drop"],
                                   [(t.name,) for t in latest.values() if t.circuit_breaker is None])
        self._rules.forget()
        self._key_rules.forget()

    def task_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its declaration}`` of every declared task with a concurrency, a rate or a circuit breaker."""
        with self._reading():
            return {row[0]: _limits.rules_of(row) for row in self._conn.execute(_RULES_SQL["read"])}

    def breakers(self) -> list[BreakerState]:
        """Where each declared circuit breaker stands, by task name."""
        with self._reading():
            rows = self._conn.execute(_RULES_SQL["breakers"]).fetchall()
        return [_limits.breaker_state(*row) for row in rows]

    def _breakers_failed(self, tasks: Sequence[str], now: float) -> None:
        """Count a failed attempt of each of `tasks` (those with a breaker) in its breaker."""
        rules = self._rules.get(self.task_rules)
        for task in tasks:
            declared = rules.get(task)
            if declared is None or declared.circuit_breaker is None:
                continue
            row = self._conn.execute(_RULES_SQL["breaker"], (task,)).fetchone()
            state, failed_at, opened_at = row if row is not None else (_limits.CLOSED, "[]", None)
            after = _limits.breaker_failed(declared.circuit_breaker, state, failed_at, opened_at, now)
            if after != (state, failed_at, opened_at):
                self._conn.execute(_RULES_SQL["breaker_put"], (task, *after, now))
                if after[0] != state:
                    logger.warning("task %s: circuit breaker open (%s)", task,
                                   "a probe failed" if state == _limits.HALF_OPEN else "too many failed attempts")

    def declared_tasks(self, names: Sequence[str]) -> dict[str, TaskDefaults]:
        """``{name: its declared defaults}`` for those of `names` that were declared."""
        found: dict[str, TaskDefaults] = {}
        with self._reading():
            for chunk in _chunks(list(dict.fromkeys(names))):
                for row in self._conn.execute(SQL.declared_tasks.format(marks=in_list(len(chunk))), chunk):
                    found[row[0]] = TaskDefaults(*row)
        return found

    def put_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        """Store `schedules`, replacing the definitions of stored names (their added_at and
        last_fired are kept).

        Raises:
            JournalError: a row was refused (unknown ``catch_up`` or ``source``); none is stored.
        """
        if not schedules:
            return
        with self.transaction(), self._savepoint():
            self._conn.executemany(SQL.put_schedules, [tuple(row) for row in schedules])

    def remove_schedules(self, names: Sequence[str]) -> int:
        """Delete the schedules `names`; returns how many there were."""
        if not names:
            return 0
        with self.transaction():
            return sum(self._conn.execute(SQL.remove_schedule, (name,)).rowcount for name in dict.fromkeys(names))

    def schedules(self) -> list[ScheduleRow]:
        """Every stored schedule, by name."""
        with self._reading():
            return [ScheduleRow(*row) for row in self._conn.execute(SQL.schedules)]

    def fire_schedule(self, name: str, previous: float | None, fired: float, jobs: Sequence[NewJob]) -> bool:
        """Move `name`'s last_fired from `previous` to `fired` and enqueue `jobs`, or do nothing
        (False) if last_fired is no longer `previous`."""
        with self.transaction():
            if self._conn.execute(SQL.fire_schedule, (fired, name, previous)).rowcount != 1:
                return False
            _limits.enqueue_firing(self.enqueue, name, jobs, logger)  # a full queue skips this firing
            return True

    def renew(self, owners: Sequence[str], lease_for: float) -> int:
        """Extend the leases held by `owners` to now + `lease_for`; returns rows renewed."""
        if not owners:
            return 0
        with self.transaction():
            return self._conn.execute(
                SQL.renew.format(marks=in_list(len(owners))), (self._clock() + lease_for, *owners)).rowcount

    def promote(self) -> int:
        """Move due scheduled and retry jobs to ready; returns the number moved."""
        now = self._clock()
        with self.transaction():
            promoted = self._conn.execute(SQL.promote, (now,)).rowcount
            if self._key_rules.get(self.key_rules):
                promoted += self._admit_due_keys(now)
            return promoted

    def has_due(self) -> bool:
        """Whether a scheduled or retry job is due (a read: no write lock is taken)."""
        now = self._clock()
        with self._reading():
            if self._conn.execute(SQL.has_due, (now,)).fetchone()[0]:
                return True
        if not self._key_rules.get(self.key_rules):
            return False
        with self._reading():
            return bool(self._conn.execute(_KEYS_SQL["has_due"], (now,)).fetchone()[0])

    def has_ready(self, queues: Sequence[str]) -> bool:
        """Whether a job of `queues` is ready (a read: no write lock is taken)."""
        if not queues:
            return False
        with self._reading():
            return any(self._conn.execute(SQL.has_ready.format(marks=in_list(len(chunk))), chunk).fetchone()[0]
                       for chunk in _chunks(list(queues)))

    def cancel(self, job_id: str) -> bool:
        """Cancel a scheduled, ready, leased or retry job; False if it is final or unknown.

        Cancelling a leased job clears its lease, so the worker's later answer is stale.
        """
        with self.transaction():
            return self._conn.execute(SQL.cancel, (self._clock(), job_id)).rowcount == 1

    def retry_dead(self, job_id: str) -> bool:
        """Make a dead or failed job ready with a fresh set of attempts; its error history is kept."""
        with self.transaction():
            return self._conn.execute(SQL.retry_dead, (self._clock(), job_id)).rowcount == 1

    # -- reads: a damaged file is a JournalError naming it, never a traceback ------------------
    def cancelled(self, job_ids: Sequence[str]) -> list[str]:
        """Those of `job_ids` that are cancelled."""
        found: list[str] = []
        with self._reading():
            for chunk in _chunks(list(job_ids)):
                found += [row[0] for row in self._conn.execute(SQL.cancelled.format(marks=in_list(len(chunk))), chunk)]
        return found

    def pause_queue(self, queue: str) -> bool:
        """Pause `queue`: no lease takes its jobs until `resume_queue`; True if it was running."""
        with self.transaction():
            return self._conn.execute(SQL.pause_queue, (queue, self._clock())).rowcount == 1

    def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again; True if it was paused."""
        with self.transaction():
            return self._conn.execute(SQL.resume_queue, (queue,)).rowcount == 1

    def paused_queues(self) -> list[str]:
        """The paused queues' names, sorted."""
        with self._reading():
            return [row[0] for row in self._conn.execute(SQL.paused_queues)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}``, from the counts the schema's triggers keep
        (actorq_counts) and the leased jobs' index, never from the jobs table itself."""
        return self._count_rows(SQL.counts)

    def _scan_counts(self) -> dict[str, dict[str, int]]:
        """`counts` read from every job (a full scan: the tests' truth, never the node's)."""
        return self._count_rows(SQL.counts_scan)

    def _count_rows(self, statement: str) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self._reading():
            for queue, state, n in self._conn.execute(statement):
                result.setdefault(queue, {})[state] = n
        return result

    def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds (see `Journal.queue_stats`)."""
        first, seconds = stats_slots(self._clock(), window)
        with self._reading():
            rows = self._conn.execute(SQL.queue_stats, (first,)).fetchall()
        return {q: QueueStats(seconds, f, failed, leased, float(w), float(m)) for q, f, failed, leased, w, m in rows}

    def get(self, job_id: str) -> JobInfo | None:
        """Return the job with its errors, oldest first, or None."""
        with self._reading():
            row = self._conn.execute(SQL.get, (job_id,)).fetchone()
            if row is None:
                return None
            errors = [e for (e,) in self._conn.execute(SQL.errors, (job_id,))]
        return JobInfo(row[0], row[1], row[2], JobState(row[3]), *row[4:], errors)

    def result(self, job_id: str) -> JobResult | None:
        """Read the job's state and outcome; an expired result reads as expired (see `Journal.result`)."""
        with self._reading():
            row = self._conn.execute(SQL.result, (job_id, self._clock())).fetchone()
        if row is None:
            return None
        return JobResult.from_row(row)

    def expire_results(self, limit: int) -> int:
        """Remove up to `limit` results whose time has passed; returns how many."""
        if limit <= 0:
            return 0
        with self.transaction():
            return self._conn.execute(SQL.expire_results, (self._clock(), limit)).rowcount

    def prune(self, older_than: Mapping[JobState, float], limit: int) -> int:
        """Delete up to `limit` finished jobs past their state's age, with their errors (see `Journal.prune`).

        Raises:
            ValueError: a state that is not final, an age or limit out of range.
        """
        pairs = check_prune(older_than, limit)
        if limit == 0 or not pairs:
            return 0
        now = self._clock()
        removed = 0
        with self.transaction():
            for state, age in pairs:
                rows = self._conn.execute(SQL.prune, (state.value, now - age, limit - removed, now)).fetchall()
                removed += len(rows)
                with_errors = [job_id for job_id, had_errors in rows if had_errors]
                for chunk in _chunks(with_errors):
                    self._conn.execute(SQL.prune_errors.format(marks=in_list(len(chunk))), chunk)
                if removed >= limit:
                    break
        return removed

    # -- the operator's reads and clears (actorq jobs / queues) --------------------------------
    def list_jobs(self, *, state: JobState | None = None, queue: str | None = None, task: str | None = None,
                  after: str | None = None, limit: int = 50) -> list[JobSummary]:
        """Up to `limit` jobs after the cursor `after`, in id order (see `Journal.list_jobs`)."""
        wanted = check_listing(state, limit)
        cursor = after or ""
        with self._reading():
            if wanted is None and queue is None:
                rows = self._conn.execute(SQL.list_all, (cursor, task, limit)).fetchall()
                return [JobSummary.from_row(row) for row in rows]
            states = [wanted] if wanted is not None else list(JobState)
            pages = [[JobSummary.from_row(row) for row in self._conn.execute(statement, (name, cursor, task, limit))]
                     for statement, name in listing_reads(SQL, states, queue,
                                                          lambda query: [n for (n,) in self._conn.execute(query)])]
        return merge_pages(pages, limit)

    def inspect(self, job_id: str) -> JobDetail | None:
        """Everything kept of one job, with its attempts' errors; None if unknown."""
        with self._reading():
            row = self._conn.execute(SQL.inspect, (job_id,)).fetchone()
            if row is None:
                return None
            errors = [ErrorRecord(*e) for e in self._conn.execute(SQL.inspect_errors, (job_id,))]
        return JobDetail(row[0], row[1], row[2], JobState(row[3]), *row[4:], errors)

    def oldest_ready(self) -> dict[str, float]:
        """``{queue: created_at}`` of each queue's earliest ready job."""
        with self._reading():
            return {name: at for name, at in self._conn.execute(SQL.oldest_ready)}

    def clear_queue(self, queue: str, states: Sequence[JobState], limit: int) -> int:
        """Delete up to `limit` waiting jobs of `queue` in `states`, with their errors (see `Journal.clear_queue`)."""
        wanted = check_clear(states, limit)
        removed = 0
        with self.transaction():
            for state in wanted:
                if removed >= limit:
                    break
                rows = self._conn.execute(for_state(SQL.clear_queue, state), (queue, limit - removed)).fetchall()
                removed += len(rows)
                with_errors = [job_id for job_id, had_errors in rows if had_errors]
                for chunk in _chunks(with_errors):
                    self._conn.execute(SQL.prune_errors.format(marks=in_list(len(chunk))), chunk)
        return removed

    def pragma(self, name: str) -> object:
        """Read one PRAGMA value (``journal_mode``, ``synchronous``, ``busy_timeout``, ...)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a pragma name: {name!r}")
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def checkpoint(self, mode: str = "truncate") -> tuple[int, int, int]:
        """Copy the WAL into the database file and restart it (E9: checkpoint starvation).

        SQLite's automatic checkpoints are passive: while readers keep reading, the WAL
        can never start over and grows without bound. ``restart`` and ``truncate`` wait
        (up to ``busy_timeout``) for the readers of the old WAL to finish, then start it
        over; ``truncate`` also shrinks the file to zero. Call it now and then from the
        journal's own thread, outside a transaction.

        Args:
            mode: ``passive``, ``full``, ``restart`` or ``truncate`` (default).

        Returns:
            ``(busy, wal_frames, checkpointed_frames)``; busy is 1 when readers kept it
            from finishing within ``busy_timeout`` (call it again later).

        Raises:
            ValueError: an unknown mode.
            JournalError: called inside a transaction, or the checkpoint failed.
        """
        if mode not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint mode must be one of {CHECKPOINT_MODES}, got {mode!r}")
        self._refuse_in_transaction("checkpoint")
        try:
            busy, frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(self._explain(exc)) from exc
        return busy, frames, done

    def _refuse_in_transaction(self, what: str) -> None:
        if self._in_tx:
            raise JournalError(f"journal {self.path}: {what}() inside a transaction")

    @property
    def outage(self) -> str | None:
        """Always None: a local file is never unreachable the way a server is."""
        return None

    def maintain(self) -> str | None:
        """Keep the WAL bounded (E9): past ``wal_limit_mb``, run a TRUNCATE `checkpoint`.

        Readers that never let go starve SQLite's own passive checkpoints, and the WAL
        then grows without bound. Call it now and then from the journal's own thread,
        outside a transaction; it may wait up to ``busy_timeout`` for readers.

        Returns:
            None while the WAL is within its limit; else what the checkpoint did, e.g.
            ``"WAL was 70.1 MB: checkpointed, restarted"``, or ``"...: readers kept the
            checkpoint busy; trying again later"``.

        Raises:
            JournalError: called inside a transaction, or the checkpoint failed.
        """
        self._refuse_in_transaction("maintain")
        self._drop_slots()
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:  # no WAL yet, or it was just removed by the last connection's close
            return None
        if size <= self.wal_limit_mb * 1024 * 1024:
            return None
        busy, _, _ = self.checkpoint("truncate")
        outcome = "readers kept the checkpoint busy; trying again later" if busy else "checkpointed, restarted"
        return f"WAL was {size / 1e6:.1f} MB: {outcome}"

    def _drop_slots(self) -> None:
        """Fold the finishes older than `STATS_KEEP` into their counts' slot 0 and drop the lease
        slots as old (a write only when there are some)."""
        cutoff = stats_slot(self._clock() - STATS_KEEP)
        with self._reading():
            stale = self._conn.execute(SQL.stale_slots, (cutoff,)).fetchone()[0]
        if stale:
            with self.transaction():
                for statement in (SQL.fold_slots, SQL.drop_slots, SQL.drop_lease_slots):
                    self._conn.execute(statement, (cutoff,))

    def try_lead(self, name: str, holder: str, ttl: float) -> bool:
        """An SQLite journal has one node (its file lock): that node leads every duty.

        True only for the journal that holds the node lock (`attach_node`); a client
        connection never leads.
        """
        return self._lock_fd is not None

    def resign(self, name: str, holder: str) -> bool:
        """Nothing to give up: leadership follows the node lock."""
        return self._lock_fd is not None

    def close(self) -> None:
        """Close the connection and release the node lock. Idempotent."""
        conn, self._conn = getattr(self, "_conn", None), None  # type: ignore[assignment]
        if conn is not None:
            conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
