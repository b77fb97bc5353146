"""Helpers for testing code that runs on actorq, and for testing actorq itself.

Three pieces, after Jepsen's queue analyses::

    task (any process) ──record()──▶ Ledger (O_APPEND text file, one line per run)
                                          │
    test: accepted ids ──┐                ▼
    journal: ok ids ─────┴──▶ check_total_queue() ──▶ QueueCheck: lost / unexpected /
                                                       duplicated / recovered, valid
    journal file ─────────▶ journal_invariants() ──▶ list of violations ([] = fine)

* `Ledger` is an *independent* record of what ran: tasks append one line per
  execution to a file the journal never touches, so a test does not have to
  believe actorq's own bookkeeping. Each line is written with one ``os.write``
  on an ``O_APPEND`` descriptor, so lines from many processes never interleave.
* `check_total_queue` is Jepsen's ``total-queue`` outcome: a run is valid iff
  no accepted job is lost and nothing ran that was never sent. Duplicates are
  counted, not failed: actorq delivers at least once.
* `journal_invariants` opens a SQLite journal read-only and lists what must
  not be true of it at rest, after a drained run.
* `eventually` is the bounded poll tests use instead of ``sleep`` then assert.

For code that *uses* actorq (docs/testing.md): `TaskRecorder` is a test mode on an in-memory
journal (`actorq.journal.memory.MemoryJournal`): jobs are recorded, asserted on
(`TaskRecorder.assert_enqueued`) and run inline when the test says so (`TaskRecorder.drain`)
or as they are enqueued; `ManualClock` is the clock a test moves. The pytest plugin
`actorq.pytest_plugin` (the ``pytest11`` entry point ``actorq``) gives them as fixtures.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import sqlite3
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Collection, Iterable, Mapping, NamedTuple, Sequence

from actorq.journal.protocol import TERMINAL_STATES, JobState

if TYPE_CHECKING:
    import psutil

    from actorq.journal.memory import MemoryJournal

__all__ = [
    "DrainResult",
    "EnqueuedJob",
    "Ledger",
    "LedgerEntry",
    "ManualClock",
    "QueueCheck",
    "TaskRecorder",
    "check_total_queue",
    "eventually",
    "job_history",
    "job_states",
    "journal_invariants",
    "kill_leftover_children",
    "live_children",
]

_TERMINAL = frozenset(str(state) for state in TERMINAL_STATES)
_PENDING = frozenset({str(JobState.READY), str(JobState.SCHEDULED), str(JobState.RETRY)})
_MAX_LINE = 4096  # one os.write of at most this many bytes is never split by O_APPEND writers


class LedgerEntry(NamedTuple):
    """One recorded execution of a job.

    Attributes:
        job_id: the job's id.
        attempt: the attempt number the task saw (``current_job().attempt``).
        pid: the process that ran it.
        tag: free text without whitespace, e.g. the worker's incarnation or a node run.
        at: Unix time of the record.
    """

    job_id: str
    attempt: int
    pid: int
    tag: str
    at: float


class Ledger:
    """An append-only text file of job executions, shared by any number of processes.

    Args:
        path: the file; created on the first `record`.

    Example (inside a task)::

        ledger = Ledger("/tmp/run/ledger.txt")

        @registry.task("demo.work")
        async def work(n: int) -> None:
            ctx = current_job()
            ledger.record(ctx.id, ctx.attempt)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<Ledger {str(self.path)!r}>"

    def record(self, job_id: str, attempt: int, pid: int | None = None, tag: str = "") -> None:
        """Append one entry with a single ``os.write`` (atomic among ``O_APPEND`` writers).

        Runs in the caller's thread and process and blocks for one small write; safe
        from tasks, threads and forked processes. The line reaches the kernel before
        this returns, so it survives a SIGKILL of the caller right after.

        Args:
            job_id: the job's id (no whitespace).
            attempt: the attempt number.
            pid: the process that ran the job; defaults to the caller's pid.
            tag: free text; whitespace is replaced with ``_``.

        Raises:
            ValueError: `job_id` contains whitespace or the line is too long.
            OSError: the file cannot be written.
        """
        if not job_id or any(c.isspace() for c in job_id):
            raise ValueError(f"ledger job ids must be non-empty and without whitespace, got {job_id!r}")
        clean_tag = "".join("_" if c.isspace() else c for c in tag) or "-"
        line = f"{job_id}\t{int(attempt)}\t{os.getpid() if pid is None else int(pid)}\t{clean_tag}\t{time.time():.6f}\n"
        data = line.encode()
        if len(data) > _MAX_LINE:
            raise ValueError(f"ledger line of {len(data)} bytes is longer than {_MAX_LINE}")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):  # pragma: no cover - regular files do not short-write small lines
            raise OSError(f"short write to ledger {self.path}: {written} of {len(data)} bytes")

    def read(self) -> list[LedgerEntry]:
        """Return every complete entry, in file order ([] if the file does not exist yet).

        Raises:
            ValueError: a complete line is not a ledger entry (the file is not a ledger).
        """
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        entries = []
        lines = text.split("\n")
        for number, line in enumerate(lines[:-1], start=1):  # the last piece is "" or unfinished
            parts = line.split("\t")
            if len(parts) != 5:
                raise ValueError(f"{self.path}:{number}: not a ledger entry: {line!r}")
            job_id, attempt, pid, tag, at = parts
            entries.append(LedgerEntry(job_id, int(attempt), int(pid), tag, float(at)))
        return entries

    def count(self) -> int:
        """Return the number of complete entries (cheap enough to poll)."""
        try:
            with open(self.path, "rb") as fp:
                return fp.read().count(b"\n")
        except FileNotFoundError:
            return 0


@dataclass(frozen=True)
class QueueCheck:
    """The outcome of `check_total_queue`.

    Attributes:
        accepted: how many jobs were accepted (the enqueue confirmed).
        executed: distinct job ids in the ledger.
        runs: ledger entries (executions, duplicates included).
        ok: distinct accepted-or-attempted job ids the journal reports as succeeded.
        lost: accepted jobs that did not both run (ledger) and succeed (journal).
        unexpected: jobs that ran but were never sent.
        recovered: jobs whose enqueue had an unknown outcome but that ran anyway.
        duplicated: job id -> number of runs, for every job that ran more than once.
    """

    accepted: int
    executed: int
    runs: int
    ok: int
    lost: frozenset[str]
    unexpected: frozenset[str]
    recovered: frozenset[str]
    duplicated: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """True iff nothing was lost and nothing unexpected ran (duplicates are allowed)."""
        return not self.lost and not self.unexpected

    @property
    def extra_runs(self) -> int:
        """Runs beyond the first, summed over the duplicated jobs."""
        return sum(n - 1 for n in self.duplicated.values())

    def summary(self) -> str:
        """One line for test output, e.g. ``total-queue: valid; accepted 2000, ... lost 0``."""

        def some(ids: frozenset[str]) -> str:
            if not ids:
                return ""
            shown = ", ".join(sorted(ids)[:5])
            return f" [{shown}{', ...' if len(ids) > 5 else ''}]"

        return (
            f"total-queue: {'valid' if self.valid else 'INVALID'}; accepted {self.accepted}, "
            f"executed {self.executed} ({self.runs} runs), ok {self.ok}, "
            f"lost {len(self.lost)}{some(self.lost)}, "
            f"unexpected {len(self.unexpected)}{some(self.unexpected)}, "
            f"duplicated {len(self.duplicated)} ({self.extra_runs} extra runs), "
            f"recovered {len(self.recovered)}"
        )


def check_total_queue(
    accepted: Collection[str],
    ledger_entries: Iterable[LedgerEntry],
    ok_ids: Collection[str],
    *,
    attempted: Collection[str] = (),
) -> QueueCheck:
    """Jepsen's total-queue check over the accepted ids, the ledger and the journal.

    Args:
        accepted: ids whose enqueue was confirmed.
        ledger_entries: what ran (`Ledger.read`).
        ok_ids: ids the journal reports as succeeded (e.g. from `job_states`).
        attempted: ids sent with an unknown outcome (enqueue timed out or errored); if
            they ran they count as ``recovered``, not ``unexpected``.

    Returns:
        A `QueueCheck`; ``lost = accepted - (executed & ok)``,
        ``unexpected = executed - accepted - attempted``.
    """
    accepted_set = frozenset(accepted)
    attempted_set = frozenset(attempted) - accepted_set
    runs = Counter(entry.job_id for entry in ledger_entries)
    executed = frozenset(runs)
    ok = frozenset(ok_ids) & (accepted_set | attempted_set)
    return QueueCheck(
        accepted=len(accepted_set),
        executed=len(executed),
        runs=sum(runs.values()),
        ok=len(ok),
        lost=accepted_set - (executed & ok),
        unexpected=executed - accepted_set - attempted_set,
        recovered=executed & attempted_set,
        duplicated={job_id: n for job_id, n in runs.items() if n > 1},
    )


def _connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=5.0)


def job_states(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return ``{job_id: state}`` for every job of a SQLite journal, opened read-only.

    Raises:
        sqlite3.Error: the file is missing or not an actorq journal.
    """
    conn = _connect_read_only(path)
    try:
        return dict(conn.execute("SELECT id, state FROM actorq_jobs"))
    finally:
        conn.close()


def job_history(path: str | os.PathLike[str]) -> dict[str, tuple[str, int, list[str]]]:
    """``{job_id: (state, attempts, [recorded errors, in attempt order])}`` of a SQLite journal, read-only.

    Raises:
        sqlite3.Error: the file is missing or not an actorq journal.
    """
    conn = _connect_read_only(path)
    try:
        jobs: dict[str, tuple[str, int, list[str]]] = {
            row[0]: (row[1], row[2], []) for row in conn.execute("SELECT id, state, attempts FROM actorq_jobs")}
        for job_id, error in conn.execute("SELECT job_id, error FROM actorq_errors ORDER BY job_id, attempt, at"):
            jobs[job_id][2].append(error)
        return jobs
    finally:
        conn.close()


def live_children() -> list["psutil.Process"]:
    """The descendants of this process that are still running (zombies excluded): what a
    test checks is empty once everything it started has stopped."""
    import psutil

    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def kill_leftover_children(grace: float) -> list[str]:
    """Wait up to `grace` seconds for this process's children to exit, then SIGKILL the rest.

    Returns a description (pid and command line) of each one that had to be killed:
    a test asserts the list is empty, so a leak fails it without leaking further.
    """
    import psutil

    deadline = time.monotonic() + grace
    leftovers = live_children()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.02)
        leftovers = live_children()
    described = []
    for child in leftovers:
        try:
            described.append(f"pid {child.pid}: {' '.join(child.cmdline())[:120]}")
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return described


def journal_invariants(path: str | os.PathLike[str], *, allow_pending: bool = False) -> list[str]:
    """Check a SQLite journal *at rest* (no node running, or a drained one) and list violations.

    Checks: ``PRAGMA quick_check`` is ``ok``; no job is ``leased`` (at rest every lease
    belongs to a dead owner); ``0 <= attempts <= max_attempts``; lease columns are empty
    outside ``leased``; ``retry`` and ``dead`` jobs carry a reason (``last_error``);
    finished jobs have ``finished_at``; and every job is in a terminal state, unless
    `allow_pending`, which also accepts ``ready``, ``scheduled`` and ``retry``.

    Args:
        path: the SQLite file (opened with ``mode=ro``; never written).
        allow_pending: accept jobs still waiting to run (a stopped, undrained node).

    Returns:
        Human-readable violations, at most 10 examples per rule; ``[]`` means all hold.
    """
    conn = _connect_read_only(path)
    try:
        problems: list[str] = []
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            problems.append(f"PRAGMA quick_check: {check[:5]}")
            return problems
        allowed = _TERMINAL | (_PENDING if allow_pending else frozenset())
        marks = ",".join("?" * len(allowed))
        rules: Sequence[tuple[str, str, tuple[Any, ...]]] = (
            ("job leased at rest (its owner is gone)", "state = 'leased'", ()),
            (f"job not in an allowed state ({', '.join(sorted(allowed))})",  # leased: see above
             f"state != 'leased' AND state NOT IN ({marks})", tuple(sorted(allowed))),
            ("attempts outside 0..max_attempts", "attempts < 0 OR attempts > max_attempts", ()),
            ("lease columns set outside 'leased'",
             "state != 'leased' AND (lease_id IS NOT NULL OR lease_owner IS NOT NULL"
             " OR lease_expires IS NOT NULL)", ()),
            ("retry or dead job without a reason", "state IN ('retry', 'dead') AND last_error IS NULL", ()),
            ("finished job without finished_at",
             "state IN ('succeeded', 'failed', 'dead', 'cancelled') AND finished_at IS NULL", ()),
        )
        for rule, where, params in rules:
            rows = conn.execute(
                f"SELECT id, state, attempts, max_attempts FROM actorq_jobs WHERE {where} LIMIT 10", params
            ).fetchall()
            if rows:
                total = conn.execute(f"SELECT count(*) FROM actorq_jobs WHERE {where}", params).fetchone()[0]
                shown = "; ".join(f"{r[0]} state={r[1]} attempts={r[2]}/{r[3]}" for r in rows)
                problems.append(f"{rule}: {total} jobs, e.g. {shown}")
        return problems
    finally:
        conn.close()


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    message: str = "",
) -> Any:
    """Poll `predicate` until it returns a truthy value; return that value.

    Runs on the caller's loop; `predicate` may be a plain or an async callable. An
    exception from it counts as "not yet" and is reported if time runs out. The
    deadline uses ``time.monotonic()``. Use it under pytest-timeout; never sleep and
    then assert.

    Args:
        predicate: the condition.
        timeout: seconds before giving up.
        interval: seconds between polls.
        message: what was awaited, for the failure message.

    Raises:
        AssertionError: still false after `timeout` s; names the condition, the last
            value and the last exception.
    """
    deadline = time.monotonic() + timeout
    polls = 0
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        polls += 1
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
            last_exc = None
        except Exception as exc:  # "not yet"; reported below if it persists
            last, last_exc = None, exc
        if last:
            return last
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            detail = f"; last exception: {last_exc!r}" if last_exc is not None else ""
            raise AssertionError(
                f"not true within {timeout:g} s ({polls} polls): {what}; last value: {last!r}{detail}"
            ) from last_exc
        await asyncio.sleep(interval)


# -- test mode for users' own code: record enqueues, assert on them, run them inline -------------------

class ManualClock:
    """A wall clock a test moves by hand (Unix seconds); give it to a journal as ``clock``.

    Args:
        start: the time it reads at first (default: the real time now).
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock `seconds` forward; returns the new time."""
        self.now += seconds
        return self.now


class EnqueuedJob(NamedTuple):
    """A job as the test journal holds it, with its arguments decoded (`TaskRecorder.enqueued`)."""

    id: str
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: JobState
    priority: int
    run_at: float
    attempts: int


class DrainResult(NamedTuple):
    """What one `TaskRecorder.drain` ran: ids of the attempts that succeeded and of those that did not."""

    succeeded: list[str]
    failed: list[str]

    @property
    def ran(self) -> int:
        """Attempts run in all."""
        return len(self.succeeded) + len(self.failed)


class _RecordingQueue:
    """A queue ref of the recorder, with the methods of `actorq.QueueRef`: ``tell`` records a job,
    ``enqueue``/``enqueue_many`` record and return ids, ``ask`` records, drains and returns the
    job's value."""

    def __init__(self, recorder: "TaskRecorder", name: str | None) -> None:
        self._recorder = recorder
        self.name = name

    def tell(self, job: Any) -> str:
        """Record `job` in this queue (None: its task's); returns ``job.id``, as `actorq.QueueRef.tell`."""
        self._recorder.enqueue(job, self.name)
        return job.id  # type: ignore[no-any-return]

    async def enqueue(self, job: Any, *, block: float = 0.0) -> str | None:
        """Record `job`; its id, the holder's, or None (as `TaskRecorder.enqueue`)."""
        return self._recorder.enqueue(job, self.name)

    async def enqueue_many(self, jobs: Sequence[Any], *, block: float = 0.0) -> list[str | None]:
        """Record `jobs` in one transaction; their ids, in order."""
        return self._recorder.enqueue_many(jobs, self.name)

    async def ask(self, job: Any, timeout: float = 10.0) -> Any:
        """Record `job`, run what is ready (`TaskRecorder.drain`, errors stored, not raised) and
        return the job's value.

        Raises:
            actorq.JobFailed: the job ended without succeeding.
            actorq.AskTimeout: it has not ended after the drain (delayed, or waiting to retry).
            actorq.NotCommitted: ``on_conflict="discard"`` left it out.
        """
        from actorq.errors import AskTimeout, NotCommitted

        job_id = self._recorder.enqueue(job, self.name)
        if job_id is None:
            raise NotCommitted(f"job {job.id} was discarded: its concurrency key {job.concurrency_key!r} "
                               "had its limit of live jobs (on_conflict='discard')")
        self._recorder.drain(raise_errors=False)
        outcome = self._recorder.journal.result(job_id)
        if outcome is None or outcome.state not in TERMINAL_STATES:
            where = "unknown" if outcome is None else outcome.state.value
            raise AskTimeout(f"job {job_id} has not ended after the drain (it is {where}): a delay or a retry "
                             "waits for the clock (advance it, or drain(with_scheduled=True))")
        return self._recorder.result(job_id)


class TaskRecorder:
    """Test mode for code that enqueues actorq jobs: jobs go to an in-memory journal, where a
    test asserts on them and runs them when it says so (or as they are enqueued: `inline`).

    The recorder has the producer methods of `actorq.Client` (`enqueue`, `enqueue_many`,
    `result`, `get`, `counts`, `cancel`) and a queue ref's ``tell`` (`queue`), so code that
    takes its client or queue as an argument runs unchanged against it. Each job goes
    through the same checks as with a real client (names, msgpack-encodable arguments,
    the task's declared queue, priority and attempts) into a `MemoryJournal`, which keeps
    the journal's rules: unique keys, ordering and concurrency keys, queue limits.

    Args:
        tasks: the registry whose functions `drain` runs and whose declarations apply to
            new jobs; None: jobs are recorded, and `drain` fails each one as unknown.
        clock: the journal's wall clock (default: a `ManualClock` at the real time now;
            ``recorder.clock.advance(60)`` makes jobs delayed by a minute due).
        inline: True: every enqueue runs the ready jobs at once (`drain`), before it returns.
        journal: the in-memory journal to use (default: a new one on `clock`).
    """

    def __init__(self, tasks: Any = None, *, clock: Callable[[], float] | None = None, inline: bool = False,
                 journal: Any = None) -> None:
        from actorq.journal.memory import MemoryJournal

        self.tasks = tasks
        self.clock = clock if clock is not None else ManualClock()
        self.journal: MemoryJournal = journal if journal is not None else MemoryJournal(clock=self.clock)
        self.inline = inline
        self._draining = False
        self._policies = tasks.policies() if tasks is not None else {}

    # -- producing ------------------------------------------------------------------------
    def enqueue(self, job: Any, queue: str | None = None) -> str | None:
        """Record one `actorq.Job`; returns its id, the holder's id when its unique key is held,
        or None when ``on_conflict="discard"`` left it out (as `actorq.Client.enqueue`).

        Raises:
            TypeError, ValueError: the job is invalid (as with a real client).
            QueueFull: its queue is at its ``max_depth`` (`MemoryJournal.declare_queues`).
        """
        return self.enqueue_many([job], queue)[0]

    def enqueue_many(self, jobs: Sequence[Any], queue: str | None = None) -> list[str | None]:
        """Record several jobs in one transaction; returns their ids, in order (see `enqueue`)."""
        from actorq.jobs.journal_writer import discarded_ids

        import dataclasses

        now = self.journal._clock()
        # a delay counts from the journal's clock (a test's ManualClock), not from the real time
        jobs = [dataclasses.replace(job, delay=None, run_at=now + job.delay) if job.delay is not None else job
                for job in jobs]
        rows = [job.to_new_job(queue, declared=self._policies.get(job.task)) for job in jobs]
        with self.journal.transaction():
            self.journal.enqueue(rows)
            keys = [row.unique_key for row in rows if row.unique_key is not None]
            holders = self.journal.holders(keys) if keys else {}
            discarded = discarded_ids(self.journal, [row for row in rows if row.discard_over_limit])
        ids = [None if row.id in discarded else holders.get(row.unique_key, row.id) if row.unique_key else row.id
               for row in rows]
        if self.inline and not self._draining:
            self.drain()
        return ids

    def tell(self, job: Any) -> str:
        """Record `job` in its task's queue; returns ``job.id`` (as `actorq.QueueRef.tell`)."""
        self.enqueue(job)
        return job.id  # type: ignore[no-any-return]

    def queue(self, name: str | None = None) -> _RecordingQueue:
        """A queue ref (as ``node.queue(name)``) whose ``tell``, ``enqueue``, ``enqueue_many`` and
        ``ask`` record into queue `name` (None: each task's own)."""
        return _RecordingQueue(self, name)

    # -- reading and asserting ---------------------------------------------------------------
    def enqueued(self, task: str | None = None, *, queue: str | None = None,
                 state: JobState | None = None) -> list[EnqueuedJob]:
        """The recorded jobs of `task` (None: every task), in enqueue (id) order, whatever their state
        unless `state` is given."""
        import msgpack

        found: list[EnqueuedJob] = []
        after: str | None = None
        while True:
            page = self.journal.list_jobs(state=state, queue=queue, task=task, after=after, limit=1000)
            for row in page:
                detail = self.journal.inspect(row.id)
                args, kwargs = msgpack.unpackb(detail.payload, raw=False) if detail is not None else ([], {})
                found.append(EnqueuedJob(row.id, row.task, row.queue, list(args), dict(kwargs), row.state,
                                         row.priority, row.run_at, row.attempts))
            if len(page) < 1000:
                return found
            after = page[-1].id

    def assert_enqueued(self, task: str | None = None, args: Sequence[Any] | None = None,
                        kwargs: Mapping[str, Any] | None = None, *, queue: str | None = None,
                        count: int | None = None) -> list[EnqueuedJob]:
        """Assert that jobs matching every given field were enqueued (`count` of them, when given;
        else at least one); returns them.

        `args` and `kwargs` compare with the decoded arguments (tuples read back as lists).

        Raises:
            AssertionError: none matched (or not `count`); the message lists what was enqueued.
        """
        matching = self._matching(task, args, kwargs, queue)
        if (count is None and not matching) or (count is not None and len(matching) != count):
            wanted = ", ".join(f"{name}={value!r}" for name, value in
                               (("task", task), ("args", args), ("kwargs", kwargs), ("queue", queue))
                               if value is not None)
            seen = "\n  ".join(f"{j.task}(args={j.args!r}, kwargs={j.kwargs!r}) queue={j.queue!r} {j.state.value}"
                               for j in self.enqueued()) or "(nothing)"
            expected = "at least 1" if count is None else str(count)
            raise AssertionError(f"expected {expected} job(s) with {wanted or 'any fields'}, found {len(matching)}; "
                                 f"enqueued:\n  {seen}")
        return matching

    def refute_enqueued(self, task: str | None = None, args: Sequence[Any] | None = None,
                        kwargs: Mapping[str, Any] | None = None, *, queue: str | None = None) -> None:
        """Assert that no job matching every given field was enqueued."""
        self.assert_enqueued(task, args, kwargs, queue=queue, count=0)

    def _matching(self, task: str | None, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                  queue: str | None) -> list[EnqueuedJob]:
        wanted_args = None if args is None else _plain(list(args))
        wanted_kwargs = None if kwargs is None else _plain(dict(kwargs))
        return [j for j in self.enqueued(task, queue=queue)
                if (wanted_args is None or j.args == wanted_args) and (wanted_kwargs is None or j.kwargs == wanted_kwargs)]

    def clear(self) -> int:
        """Forget every recorded job; returns how many there were."""
        with self.journal.transaction():
            removed = len(self.journal.store.state.jobs)
            self.journal.store.state.jobs.clear()
        return removed

    # -- running -----------------------------------------------------------------------------
    def drain(self, queue: str | None = None, *, with_scheduled: bool = False, raise_errors: bool = True,
              limit: int = 10_000) -> DrainResult:
        """Run ready jobs inline, in this thread, through the registry's functions, until none is left.

        Jobs the tasks enqueue meanwhile run too (in the same drain). An attempt that raises is
        stored as a worker would store it (the task's retry policy decides: retry, dead or
        failed); a retry waits for its time unless `with_scheduled`.

        Args:
            queue: only this queue's jobs (None: every queue).
            with_scheduled: also run jobs delayed to a later time, and retries before their time.
            raise_errors: True: the first exception a task raised is raised again here (after its
                attempt was stored); False: it is stored only, and counted in `DrainResult.failed`.
            limit: the most attempts one drain runs (a guard against a task that enqueues forever).

        Raises:
            Exception: what a task raised (`raise_errors`).
            RuntimeError: more than `limit` attempts were run.
        """
        succeeded: list[str] = []
        failed: list[str] = []
        first_error: BaseException | None = None
        self._draining = True
        try:
            while True:
                if with_scheduled:
                    self._make_due()
                self.journal.promote()
                queues = [queue] if queue is not None else sorted(self.journal.counts())
                leased = self.journal.lease(queues, "actorq.testing", 1, 3600.0)
                if not leased:
                    break
                if len(succeeded) + len(failed) >= limit:
                    raise RuntimeError(f"drain ran {limit} attempts and jobs are still ready: a task that "
                                       "enqueues jobs forever?")
                error = self._run(leased[0])
                (succeeded if error is None else failed).append(leased[0].id)
                if error is not None and first_error is None:
                    first_error = error
                    if raise_errors:
                        break
        finally:
            self._draining = False
        if first_error is not None and raise_errors:
            raise first_error
        return DrainResult(succeeded, failed)

    def _make_due(self) -> None:
        now = self.journal._clock()
        with self.journal.transaction():
            for job in self.journal.store.state.jobs.values():
                if job.state in (JobState.SCHEDULED, JobState.RETRY) and job.run_at > now:
                    job.run_at = now

    def _run(self, leased: Any) -> BaseException | None:
        import msgpack

        from actorq.jobs.outcome import AttemptEnd, decide
        from actorq.jobs.retry import Retry, backoff_delay, retryable
        from actorq.jobs.task import Discard, JobContext, _current
        from actorq.journal.protocol import Failure, KeptResult

        task = self.tasks[leased.task] if self.tasks is not None and leased.task in self.tasks else None
        if task is None:
            error = f"UnknownTask: no task {leased.task!r} in the recorder's registry"
            self.journal.fail([Failure(leased.id, leased.lease_id, error, JobState.DEAD)])
            return LookupError(error)
        args, kwargs = msgpack.unpackb(leased.payload, raw=False)
        token = _current.set(JobContext(leased.id, leased.task, leased.queue, leased.attempt, leased.max_attempts))
        try:
            value = task.fn(*args, **kwargs)
            if inspect.isawaitable(value):
                value = _run_awaitable(value)
        except Exception as exc:
            delay = exc.delay if isinstance(exc, Retry) else None
            if isinstance(exc, Discard):
                end = AttemptEnd.DISCARDED
            elif retryable(exc, task.retry_on, task.dont_retry_on):
                end = AttemptEnd.RAISED
                if delay is None and task.backoff is not None and not isinstance(exc, Retry):
                    delay = backoff_delay(task.backoff, leased.attempt, exc)
            else:
                end = AttemptEnd.PERMANENT
            outcome = decide(task.policy, end, leased.attempt, leased.max_attempts, 0.5, delay)
            retry_at = None if outcome.retry_in is None else self.journal._clock() + outcome.retry_in
            self.journal.fail([Failure(leased.id, leased.lease_id, f"{type(exc).__name__}: {exc}", outcome.state,
                                       retry_at, "".join(traceback.format_exception(exc)))])
            return exc
        finally:
            _current.reset(token)
        kept = None
        if value is not None and task.result_ttl != 0:
            kept = {leased.id: KeptResult(msgpack.packb(value, use_bin_type=True), task.result_ttl or 86400.0)}
        self.journal.complete([(leased.id, leased.lease_id)], results=kept)
        return None

    # -- every actorq.Client of a test -----------------------------------------------------------
    def patch_clients(self, monkeypatch: Any) -> None:
        """Make every `actorq.Client` and `actorq.AsyncClient` created from now until the end of
        the test a front of this recorder, whatever its URL: the app's own ``Client(url)`` then
        records, nothing is written.

        `enqueue`, `enqueue_many`, `ask`, `result` (which drains what is due first, as a node
        would run it), `get`, `counts`, `cancel` and `close` go to the recorder; the other
        methods are not patched. An `AsyncClient` runs its calls on its own thread, in the
        order they were made, as it does in production. `monkeypatch` (pytest's fixture)
        undoes it after the test.
        """
        from actorq.jobs.async_client import AsyncClient
        from actorq.jobs.client import Client

        recorder = self

        def init(client: Any, *args: Any, **kwargs: Any) -> None:
            client._recorder = recorder

        def result(client: Any, job_id: str, timeout: float = 10.0) -> Any:
            recorder.drain(raise_errors=False)
            return recorder.result(job_id)

        monkeypatch.setattr(Client, "__init__", init)
        monkeypatch.setattr(Client, "enqueue",
                            lambda client, job, queue=None, *, block=0.0: recorder.enqueue(job, queue))
        monkeypatch.setattr(Client, "enqueue_many",
                            lambda client, jobs, queue=None, *, block=0.0: recorder.enqueue_many(jobs, queue))
        monkeypatch.setattr(Client, "result", result)
        monkeypatch.setattr(Client, "get", lambda client, job_id: recorder.get(job_id))
        monkeypatch.setattr(Client, "counts", lambda client: recorder.counts())
        monkeypatch.setattr(Client, "cancel", lambda client, job_id: recorder.cancel(job_id))
        monkeypatch.setattr(Client, "close", lambda client: None)

        async def async_result(client: Any, job_id: str, timeout: float = 10.0) -> Any:
            # on the client's thread, after the calls made before it (the enqueue it waits for)
            return await client._call(lambda sync: sync.result(job_id, timeout))

        monkeypatch.setattr(AsyncClient, "result", async_result)

    # -- the client's reads -------------------------------------------------------------------
    def result(self, job_id: str) -> Any:
        """The return value of a succeeded job (decoded), as `actorq.Client.result` gives it.

        Raises:
            LookupError: no such job. RuntimeError: the job has not finished (drain first).
            actorq.JobFailed: it ended without succeeding.
        """
        import msgpack

        from actorq.errors import JobFailed

        outcome = self.journal.result(job_id)
        if outcome is None:
            raise LookupError(f"no job {job_id!r} was enqueued")
        if outcome.state not in TERMINAL_STATES:
            raise RuntimeError(f"job {job_id} is {outcome.state.value}, not finished: drain() first")
        if outcome.state != JobState.SUCCEEDED:
            raise JobFailed(job_id, outcome.state.value, outcome.error, outcome.traceback)
        return None if outcome.result is None else msgpack.unpackb(outcome.result, raw=False)

    def get(self, job_id: str) -> Any:
        """The job's row (`actorq.journal.JobInfo`), or None."""
        return self.journal.get(job_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` of the recorded jobs."""
        return self.journal.counts()

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not finished; True if it was cancelled."""
        return self.journal.cancel(job_id)

    def close(self) -> None:
        """Nothing to release (the memory goes with the recorder); for the client's interface."""


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


def _run_awaitable(value: Awaitable[Any]) -> Any:
    """Run an async task's awaitable to its end: on a loop of its own, in this thread, or, when
    this thread already runs a loop (an async test), in a thread of its own with this context."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(value))
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(_awaited(value))
        except BaseException as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name="actorq-testing-task")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _plain(value: Any) -> Any:
    """`value` as it reads back from msgpack: tuples become lists, at every depth."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value

