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
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Collection, Iterable, NamedTuple, Sequence

from actorq.journal.protocol import TERMINAL_STATES, JobState

if TYPE_CHECKING:
    import psutil

__all__ = [
    "Ledger",
    "LedgerEntry",
    "QueueCheck",
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
