"""The journal writer: the one owner of the journal, committing in groups.

::

    loop thread                              writer thread
    ───────────                              ─────────────
    tell / acks / leases ──submit(op)──▶ SimpleQueue ──▶ take all pending ops (≤ batch_max)
                                                        BEGIN IMMEDIATE
                                                          enqueue  (one executemany)
                                                          complete (one executemany)
                                                          fail, release, reclaim, promote
                                                          lease    (one UPDATE … RETURNING per worker)
                                                        COMMIT   (one fsync for the whole group)
    callbacks ◀──call_soon_threadsafe (once per group)──┘

Group commit: while one transaction is being written and fsynced, new ops pile
up in the queue; the next transaction takes them all. Under load one fsync
serves hundreds of jobs; at light load a job waits for one commit only. The
database I/O never runs on the event loop.

Ops inside a group run in a fixed order (enqueues, acks and failures,
releases, reclaims, promotions, then leases), so a lease in the same group
sees the jobs just enqueued, and a worker's last acks land before its death's
reclaim. A callback runs only after its op's group committed: a job is
*accepted* when its enqueue callback reports success, never earlier. If the
commit fails, every op of the group gets the error.

Failed attempts and reclaims are *settled* here: the writer reads each attempt
as the journal holds it (task, attempt number, max_attempts, current lease),
asks the runtime's `decide` (`actorq.jobs.outcome`) what the end means, and
the journal stores that outcome, in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, NamedTuple, Sequence

from actorq.errors import JournalError
from actorq.jobs.outcome import DEFAULT_POLICY, AttemptEnd, Outcome, decide
from actorq.journal.config import DEFAULT_BATCH_MAX
from actorq.journal.protocol import Attempt, Failure, Journal, LeasedJob, NewJob

logger = logging.getLogger(__name__)

Callback = Callable[[Any, BaseException | None], None]
Decide = Callable[[Attempt, AttemptEnd], Outcome]

# op kinds, in the order they are applied inside one group
ENQUEUE, COMPLETE, FAIL, RELEASE, RECLAIM, RENEW, PROMOTE, LEASE, CALL, OUTSIDE = range(10)
# CALL: fn(journal) inside the group's transaction (reads, leadership, the task catalog)
# OUTSIDE: fn(journal) after the group's commit, outside any transaction (journal maintenance)
_STOP = -1


class Ending(NamedTuple):
    """How one attempt ended, naming the lease it ran under (the arg of a FAIL op is a list of these)."""

    job_id: str
    lease_id: int
    end: AttemptEnd
    error: str


class Reclaim(NamedTuple):
    """Take back the leases of a holder that is gone, settling each job (the arg of a RECLAIM op).

    Exactly one selection: `owner` (with `keep`, the lease ids it still holds), `prefix`
    (every owner whose name starts with it; "" is every lease), or neither (the leases
    that expired by the journal's clock).
    """

    end: AttemptEnd
    reason: str
    """Recorded as the attempt's error."""
    owner: str | None = None
    keep: tuple[int, ...] = ()
    prefix: str | None = None

    def select(self, journal: Journal) -> list[Attempt]:
        """The attempts this reclaim takes back."""
        if self.owner is not None:
            return journal.leased_by(self.owner, keep=self.keep)
        if self.prefix is not None:
            return journal.leased_with_prefix(self.prefix)
        return journal.expired()


class Renew(NamedTuple):
    """Extend the leases of live owners (the arg of a RENEW op)."""

    owners: Sequence[str]
    lease_for: float


class Lease(NamedTuple):
    """Lease up to `limit` ready jobs of `queues` to `owner` (the arg of a LEASE op)."""

    queues: Sequence[str]
    owner: str
    limit: int
    lease_for: float


def default_decide(attempt: Attempt, end: AttemptEnd) -> Outcome:
    """`decide` with the default task policy (for a writer that knows no tasks)."""
    return decide(DEFAULT_POLICY, end, attempt.attempt, attempt.max_attempts, random.random())


class WriterStats:
    """Counters kept by the writer thread (read them from anywhere; ints are atomic)."""

    def __init__(self) -> None:
        self.commits = 0
        self.ops = 0
        self.jobs_enqueued = 0
        self.jobs_acked = 0  # successes the journal stored
        self.attempts_failed = 0  # attempts that ended otherwise (raised, discarded, unrunnable) it stored
        self.stale_acks = 0  # acks and failures it refused: their lease was not current (fenced)
        self.failed_commits = 0
        self.last_error: str | None = None  # why the latest group failed; None once one commits again
        self.max_group = 0


class JournalWriter:
    """Owns a `Journal` on a dedicated thread and applies submitted ops in group commits.

    Args:
        journal_factory: opens the journal; called on the writer thread.
        loop: the loop on which callbacks run.
        batch_max: the most ops in one group.
        on_enqueued: called on the loop with the set of queues that got new jobs,
            after their group committed (wakes the dispatcher).
        decide: what an attempt's end means for its job (called on the writer thread);
            by default the default task policy's answer.
    """

    def __init__(
        self,
        journal_factory: Callable[[], Journal],
        loop: asyncio.AbstractEventLoop,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        on_enqueued: Callable[[set[str]], None] | None = None,
        decide: Decide = default_decide,
    ) -> None:
        self._factory = journal_factory
        self.loop = loop  # the loop its callbacks run on
        self._batch_max = batch_max
        self._on_enqueued = on_enqueued
        self._decide = decide
        self._queue: queue.SimpleQueue[tuple[int, Any, Callback | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._opened: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self.stats = WriterStats()
        self.journal: Journal | None = None
        self._closed = False
    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Open the journal on the writer thread. Idempotent.

        Raises:
            JournalError: the journal could not be opened.
        """
        if self._thread is not None:
            return
        self._opened = self.loop.create_future()
        self._done = self.loop.create_future()
        self._thread = threading.Thread(target=self._run, name="actorq-journal-writer", daemon=True)
        self._thread.start()
        await self._opened

    async def stop(self) -> None:
        """Apply every op submitted so far, commit, close the journal. Idempotent."""
        if self._thread is None or self._done is None:
            return
        if not self._done.done():
            self._queue.put((_STOP, None, None))
        await asyncio.shield(self._done)

    @property
    def finished(self) -> "asyncio.Future[None]":
        """Resolved when the writer thread has ended (after `stop`, or if it died)."""
        if self._done is None:
            raise RuntimeError("the journal writer was not started")
        return self._done

    # -- submitting (thread-safe) ------------------------------------------------------
    def submit(self, kind: int, arg: Any, callback: Callback | None = None) -> None:
        """Queue one op; `callback(result, error)` runs on the loop after its group commits.

        After `stop`, the callback gets a `JournalError` instead (the op is not applied).
        """
        self._queue.put((kind, arg, callback))
        if self._closed:
            self._fail_leftovers()

    def enqueue(self, job: NewJob, callback: Callback | None = None) -> None:
        """Queue one job insert (fire-and-forget unless `callback` is given)."""
        self.submit(ENQUEUE, job, callback)

    async def call(self, kind: int, arg: Any = None) -> Any:
        """Submit one op and wait for its committed result."""
        fut = self.loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self.submit(kind, arg, done)
        return await fut

    # -- the writer thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            self.journal = self._factory()
        except BaseException as exc:
            self.loop.call_soon_threadsafe(_settle, self._opened, exc)
            self.loop.call_soon_threadsafe(_settle, self._done, None)
            return
        self.loop.call_soon_threadsafe(_settle, self._opened, None)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        try:
            while not stopping:
                ops = [get()]
                while len(ops) < self._batch_max:
                    try:
                        ops.append(get_nowait())
                    except queue.Empty:
                        break
                if ops[-1][0] == _STOP or any(op[0] == _STOP for op in ops):
                    stopping = True
                    ops = [op for op in ops if op[0] != _STOP]
                outside = [op for op in ops if op[0] == OUTSIDE]
                if outside:
                    ops = [op for op in ops if op[0] != OUTSIDE]
                if ops:
                    self._apply(ops)
                for op in outside:
                    self._apply_outside(op)
        finally:
            self._closed = True
            try:
                self.journal.close()
            finally:
                self._fail_leftovers()
                self.loop.call_soon_threadsafe(_settle, self._done, None)

    def _fail_leftovers(self) -> None:
        """Answer every op submitted after the stop: it was not applied."""
        error = JournalError("the journal writer has stopped; the op was not applied")
        results: list[tuple[Callback, Any, BaseException | None]] = []
        while True:
            try:
                _, _, cb = self._queue.get_nowait()
            except queue.Empty:
                break
            if cb is not None:
                results.append((cb, None, error))
        if results:
            self.loop.call_soon_threadsafe(self._deliver, results, set())

    def _apply(self, ops: list[tuple[int, Any, Callback | None]]) -> None:
        journal = self.journal
        assert journal is not None
        ops.sort(key=lambda op: op[0])  # stable: keeps submission order within a kind
        results: list[tuple[Callback, Any, BaseException | None]] = []
        enqueued_queues: set[str] = set()
        stats = self.stats
        try:
            with journal.transaction():
                i, n = 0, len(ops)
                while i < n:
                    kind = ops[i][0]
                    j = i
                    while j < n and ops[j][0] == kind:
                        j += 1
                    self._apply_kind(journal, kind, ops[i:j], results, enqueued_queues)
                    i = j
        except Exception as exc:  # the group is lost, not the writer: it keeps serving the next one
            stats.failed_commits += 1
            stats.last_error = str(exc) or type(exc).__name__
            logger.error("journal commit failed for %d ops: %s", len(ops), exc,
                         exc_info=not isinstance(exc, JournalError))
            results = [(cb, None, exc) for (_, _, cb) in ops if cb is not None]
            enqueued_queues = set()
        else:
            stats.commits += 1
            stats.last_error = None
            stats.ops += len(ops)
            stats.max_group = max(stats.max_group, len(ops))
        if results or enqueued_queues:
            self.loop.call_soon_threadsafe(self._deliver, results, enqueued_queues)

    def _apply_outside(self, op: tuple[int, Any, Callback | None]) -> None:
        _, fn, cb = op
        try:
            result, error = fn(self.journal), None
        except Exception as exc:  # reported to the caller; the writer goes on
            result, error = None, exc
        if cb is not None:
            self.loop.call_soon_threadsafe(self._deliver, [(cb, result, error)], set())

    def _apply_kind(
        self,
        journal: Journal,
        kind: int,
        ops: Sequence[tuple[int, Any, Callback | None]],
        results: list[tuple[Callback, Any, BaseException | None]],
        enqueued_queues: set[str],
    ) -> None:
        stats = self.stats
        if kind == ENQUEUE:
            jobs = [op[1] for op in ops]
            try:
                journal.enqueue(jobs)
            except Exception as exc:  # a statement error rolls back only this statement
                logger.error("enqueue of %d jobs failed: %s", len(jobs), exc)
                results.extend((cb, None, exc) for (_, _, cb) in ops if cb is not None)
                return
            stats.jobs_enqueued += len(jobs)
            enqueued_queues.update(job.queue for job in jobs)
            keys = [job.unique_key for job in jobs if job.unique_key is not None]
            # in the same transaction: the id that holds each unique key (ours, or a live job's)
            holders = journal.holders(keys) if keys else {}
            results.extend((cb, holders.get(op_arg.unique_key, op_arg.id) if op_arg.unique_key else op_arg.id, None)
                           for (_, op_arg, cb) in ops if cb is not None)
            return
        if kind == COMPLETE:  # args are lists of (job_id, lease_id); one executemany for all
            acks = [ack for op in ops for ack in op[1]]
            accepted = self._guard(lambda: journal.complete(acks), ops, results)
            if accepted is not None:
                stats.jobs_acked += accepted
                stats.stale_acks += len(acks) - accepted
                results.extend((cb, None, None) for (_, _, cb) in ops if cb is not None)
            return
        if kind == FAIL:
            endings: list[Ending] = [e for op in ops for e in op[1]]
            accepted = self._guard(lambda: self._settle_endings(journal, endings), ops, results)
            if accepted is not None:
                stats.attempts_failed += accepted
                stats.stale_acks += len(endings) - accepted
                results.extend((cb, None, None) for (_, _, cb) in ops if cb is not None)
            return
        for _, arg, cb in ops:
            try:
                result = self._single(journal, kind, arg)
            except Exception as exc:
                logger.error("journal op %d failed: %s", kind, exc)
                if cb is not None:
                    results.append((cb, None, exc))
                continue
            if cb is not None:
                results.append((cb, result, None))

    @staticmethod
    def _guard(fn: Callable[[], int], ops: Sequence[tuple[int, Any, Callback | None]],
               results: list[tuple[Callback, Any, BaseException | None]]) -> int | None:
        try:
            return fn()
        except Exception as exc:
            logger.error("journal op failed: %s", exc)
            results.extend((cb, None, exc) for (_, _, cb) in ops if cb is not None)
            return None

    def _single(self, journal: Journal, kind: int, arg: Any) -> Any:
        if kind == RELEASE:
            return journal.release(arg)
        if kind == RECLAIM:
            reclaim: Reclaim = arg
            return self._settle(journal, reclaim.select(journal), lambda _: (reclaim.end, reclaim.reason))
        if kind == RENEW:
            return journal.renew(arg.owners, arg.lease_for)
        if kind == PROMOTE:
            return journal.promote()
        if kind == LEASE:
            leased: list[LeasedJob] = journal.lease(arg.queues, arg.owner, arg.limit, arg.lease_for)
            return leased
        if kind == CALL:  # a read or a transition given as fn(journal)
            return arg(journal)
        raise ValueError(f"unknown journal op {kind}")

    def _settle_endings(self, journal: Journal, endings: Sequence[Ending]) -> int:
        """Settle attempts that ended as the workers or the dispatcher said; stale leases are skipped."""
        by_job = {e.job_id: e for e in endings}
        current = journal.attempts([(e.job_id, e.lease_id) for e in endings])
        return self._settle(journal, current, lambda a: (by_job[a.job_id].end, by_job[a.job_id].error))

    def _settle(self, journal: Journal, attempts: Sequence[Attempt],
                end_of: Callable[[Attempt], tuple[AttemptEnd, str]]) -> int:
        """Decide each attempt's outcome and store it; returns how many the journal accepted."""
        if not attempts:
            return 0
        now = time.time()
        failures = []
        for attempt in attempts:
            end, error = end_of(attempt)
            outcome = self._decide(attempt, end)
            retry_at = None if outcome.retry_in is None else now + outcome.retry_in
            failures.append(Failure(attempt.job_id, attempt.lease_id, error, outcome.state, retry_at))
        return journal.fail(failures)

    def _deliver(self, results: list[tuple[Callback, Any, BaseException | None]], queues: set[str]) -> None:
        for cb, result, error in results:
            try:
                cb(result, error)
            except Exception:
                logger.exception("journal callback failed")
        if queues and self._on_enqueued is not None:
            self._on_enqueued(queues)


def _settle(fut: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if fut is None or fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(None)


