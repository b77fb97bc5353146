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
*accepted* when its enqueue callback reports success, never earlier.

When a group fails, no op is dropped for a neighbour's sake (see `_apply`)::

    failed before any statement (unreachable, disk full) ──▶ every op gets the error
    transient (deadlock, lock timeout, session ended) ─────▶ the whole group once more
    again, or the journal refused an op's values ──────────▶ the failing statement's ops split off,
                                                             the others commit; the split ops are
                                                             halved until the culprit is alone:
                                                             tried again later (transient) or
                                                             answered with its own error
    COMMIT outcome unknown (connection lost during it) ────▶ idempotent ops run again, the rest
                                                             (leases, calls) get the error

An answer whose row another transaction holds (a shared journal: another node
rescuing that job, or paused on it) comes back *busy* and waits here, not in
the database: it is put aside and tried again in a later group.

Failed attempts and reclaims are *settled* here: the writer reads each attempt
as the journal holds it (task, attempt number, max_attempts, current lease),
asks the runtime's `decide` (`actorq.jobs.outcome`) what the end means, and
the journal stores that outcome, in the same transaction.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import operator
import queue
import random
import threading
import time
from collections import Counter
from typing import Any, Callable, Collection, Mapping, NamedTuple, Sequence

from actorq.errors import JournalError, QueueFull
from actorq.jobs.events import EventHub, NodeEvent
from actorq.jobs.outcome import DEFAULT_POLICY, AttemptEnd, Outcome, decide
from actorq.journal.config import DEFAULT_BATCH_MAX
from actorq.journal.protocol import TERMINAL_STATES, Attempt, Failure, JobResult, Journal, KeptResult, NewJob

logger = logging.getLogger(__name__)

Callback = Callable[[Any, BaseException | None], None]
Decide = Callable[[Attempt, AttemptEnd, "float | None"], Outcome]
"""``(attempt, end, delay) -> Outcome``: `delay` is the wait the worker asked for, or None."""

# op kinds, in the order they are applied inside one group
ENQUEUE, COMPLETE, FAIL, RELEASE, RECLAIM, RENEW, PROMOTE, LEASE, CALL, OUTSIDE = range(10)
# CALL: fn(journal) inside the group's transaction (reads, leadership, the task catalog)
# OUTSIDE: fn(journal) after the group's commit, outside any transaction (journal maintenance)
_STOP = -1
_TURN = -3  # (_TURN, [op, ...], None): the ops one turn of the loop submitted, queued as one item
TURN_MAX = 64  # ops of one turn queued together at most: more are a burst, best written while it goes on
COMMIT_PHASE = -2  # a group failed at its COMMIT (not in an op's statement)
_KIND_NAMES = ("enqueue", "complete", "fail", "release", "reclaim", "renew", "promote", "lease", "call", "outside")
# Safe to apply twice, so run again after a COMMIT whose outcome is unknown: each is idempotent
# or fenced by lease id (a LEASE would hand out a second batch; a CALL may be anything).
IDEMPOTENT = frozenset({ENQUEUE, COMPLETE, FAIL, RELEASE, RECLAIM, RENEW, PROMOTE})
RETRY_TRIES = 8  # an op that keeps failing for a transient reason is answered with its error after this
BUSY_TRIES = 30  # answers whose rows stay locked elsewhere are left to the lease expiry after this (~50 s)
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0

Op = tuple  # (kind, arg, callback) as submitted; (kind, arg, callback, tries) when tried again
Result = tuple  # (callback, result, error)
_kind = operator.itemgetter(0)


def discarded_ids(journal: Journal, jobs: Sequence[NewJob]) -> set[str]:
    """The ids among `jobs` (those enqueued with ``discard_over_limit``) that the enqueue just
    made in this transaction did not add: their key had its limit of live jobs. One read a job:
    a discarding enqueue is the rare case."""
    return {job.id for job in jobs if journal.get(job.id) is None}


class _Group:
    """What one group's transaction produced, kept until it commits."""

    __slots__ = ("results", "queues", "leased", "drained", "tally", "aside", "events")

    def __init__(self) -> None:
        self.results: list[Result] = []  # (callback, result, error) to deliver on the loop
        self.queues: set[str] = set()  # queues that got new jobs
        self.leased: set[str] = set()  # owners that leased after them, in this group (they saw the jobs)
        self.drained: set[str] = set()  # queues such a lease left with no ready job
        self.tally: Counter[str] = Counter()  # counts to add to `WriterStats`
        self.aside: list[tuple[float, Op]] = []  # (delay, op): answers to try again later
        self.events: list[NodeEvent] | None = None  # node events, handed to the hub once committed


class _GroupFailed(Exception):
    """A group's transaction failed: the error, and the phase it failed in (None: before any
    statement, e.g. the journal is unreachable; an op kind; or `COMMIT_PHASE`)."""

    def __init__(self, error: JournalError, phase: int | None, cause: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
        self.phase = phase
        self.cause = cause  # what the ops' callbacks get


class Ending(NamedTuple):
    """How one attempt ended, naming the lease it ran under (the arg of a FAIL op is a list of these)."""

    job_id: str
    lease_id: int
    end: AttemptEnd
    error: str
    traceback: str | None = None
    delay: float | None = None
    """Seconds the worker asked to wait before the next attempt (`actorq.Retry`, a backoff function)."""


class Completions(list):  # type: ignore[type-arg]
    """The arg of a COMPLETE op whose jobs returned values: ``(job_id, lease_id)`` pairs, and
    `results` by job id (a plain list of pairs is the arg when none did: nothing extra per job)."""

    def __init__(self, pairs: Sequence[tuple[str, int]], *, results: Mapping[str, KeptResult]) -> None:
        super().__init__(pairs)
        self.results = results


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
    """Lease up to `limit` ready jobs of `queues` to `owner` (the arg of a LEASE op).

    `limit` may be a function, called on the writer thread when the lease runs: the
    dispatcher's, which gives the worker's free credits then, so that credits its acks
    freed while the lease waited for its group go into it too.
    """

    queues: Sequence[str]
    owner: str
    limit: int | Callable[[], int]
    lease_for: float
    rate_waits: list[float] | None = None
    """Given: gets the seconds until the next token of a rate that left the lease short
    (the journal's ``rate_wait``), so the caller can come back then."""


def default_decide(attempt: Attempt, end: AttemptEnd, delay: float | None = None) -> Outcome:
    """`decide` with the default task policy (for a writer that knows no tasks)."""
    return decide(DEFAULT_POLICY, end, attempt.attempt, attempt.max_attempts, random.random(), delay)


COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds, in seconds, of the commit-time histogram (`WriterStats.commit_seconds`)."""
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Upper bounds, in ops, of the group-size histogram (`WriterStats.group_sizes`)."""


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
        self.busy_retries = 0  # answers put aside because another transaction held their rows
        self.group_started = 0.0  # time.monotonic() when the group under way began; 0.0: none is
        self.last_error: str | None = None  # why the latest group failed; None once one commits again
        self.max_group = 0
        # the outcomes of the failed attempts it stored (their sum is `attempts_failed`)
        self.jobs_retried = 0  # to retry, or straight back to ready (a crash reclaimed)
        self.jobs_dead = 0
        self.jobs_failed = 0  # given up for good (``failed``), or cancelled while they ran
        # each committed group's time (commit_seconds[i] groups took at most COMMIT_BUCKETS[i] s;
        # the last entry: longer) and size (likewise with GROUP_BUCKETS), for the metrics endpoint
        self.commit_seconds = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_seconds_sum = 0.0
        self.group_sizes = [0] * (len(GROUP_BUCKETS) + 1)


class JournalWriter:
    """Owns a `Journal` on a dedicated thread and applies submitted ops in group commits.

    Args:
        journal_factory: opens the journal; called on the writer thread.
        loop: the loop on which callbacks run.
        batch_max: the most ops in one group.
        on_enqueued: called on the loop after a group that added jobs committed, with the
            queues that got them, less those that a lease later in the group left empty, and
            the owners whose leases came after them in that group (and so saw them): wakes
            the dispatcher.
        decide: what an attempt's end means for its job (called on the writer thread);
            by default the default task policy's answer.
    """

    def __init__(
        self,
        journal_factory: Callable[[], Journal],
        loop: asyncio.AbstractEventLoop,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        on_enqueued: Callable[[set[str], Collection[str]], None] | None = None,
        decide: Decide = default_decide,
    ) -> None:
        self._factory = journal_factory
        self.loop = loop  # the loop its callbacks run on
        self._batch_max = batch_max
        self._on_enqueued = on_enqueued
        self._decide = decide
        self._queue: queue.SimpleQueue[tuple[int, Any, Callback | None]] = queue.SimpleQueue()
        self._loop_thread: int | None = None  # the loop's thread, once started
        self._turn: list[Op] = []  # ops submitted on the loop in its current turn, not yet queued
        self._submitted = 0  # ops submitted (loop thread); `backlog` is this minus `_taken`
        self._taken = 0  # ops taken into groups (writer thread)
        self._carry: list[Op] = []  # ops taken from the queue past `batch_max`: the next group's first (writer thread)
        self._thread: threading.Thread | None = None
        self._opened: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self.stats = WriterStats()
        self.journal: Journal | None = None
        self._closed = False
        # ops to try again, and when: a heap of (monotonic time, sequence, op); writer thread only
        self._later: list[tuple[float, int, Op]] = []
        self._seq = itertools.count()
        # ids of jobs someone waits for (the loop adds and removes them; the writer thread only
        # tests membership), and who is told their final outcome after each commit
        self.watched: set[str] = set()
        self.on_outcome: Callable[[JobResult], None] | None = None
        self.events: EventHub | None = None
        """Where node events go after each commit (enqueued, succeeded, retried, failed, dead)."""
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
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="actorq-journal-writer", daemon=True)
        self._thread.start()
        await self._opened

    async def stop(self) -> None:
        """Apply every op submitted so far, commit, close the journal. Idempotent."""
        if self._thread is None or self._done is None:
            return
        if not self._done.done():
            self._flush_turn()  # what this turn submitted is applied before the stop
            self._queue.put((_STOP, None, None))
        await asyncio.shield(self._done)

    @property
    def finished(self) -> "asyncio.Future[None]":
        """Resolved when the writer thread has ended (after `stop`, or if it died)."""
        if self._done is None:
            raise RuntimeError("the journal writer was not started")
        return self._done

    # -- submitting (thread-safe) ------------------------------------------------------
    def submit(self, kind: int, arg: Any, callback: Callback | None = None) -> bool:
        """Queue one op; `callback(result, error)` runs on the loop after its group commits.

        Ops submitted on the loop reach the writer together at the end of the loop's turn
        (one queue item, or one every `TURN_MAX` ops), so that what one event causes lands
        in one group: a producer's jobs with the leases of the workers they wake, a worker's
        acks with its next lease.
        After `stop`, the callback gets a `JournalError` instead (the op is not applied).

        Returns:
            True when it was submitted on the loop: an op submitted later in this turn
            (a lease) lands in the same group, after it.
        """
        op = (kind, arg, callback)
        if threading.get_ident() == self._loop_thread:
            self._submitted += 1
            turn = self._turn
            turn.append(op)
            if len(turn) == 1:
                self.loop.call_soon(self._flush_turn)
            elif len(turn) >= TURN_MAX:  # a burst (tells in a loop): the writer starts on it at once
                self._flush_turn()
            return True
        self._queue.put(op)
        if self._closed:
            self._fail_leftovers()
        return False

    def _flush_turn(self) -> None:
        """Queue the ops this turn of the loop submitted, as one item (on the loop)."""
        if not self._turn:
            return
        ops, self._turn = self._turn, []
        self._queue.put((_TURN, ops, None))
        if self._closed:
            self._fail_leftovers()

    @property
    def backlog(self) -> int:
        """Ops submitted and not yet taken into a group (approximate; read it from anywhere)."""
        return max(0, self._submitted - self._taken) + self._queue.qsize()

    def enqueue(self, job: NewJob, callback: Callback | None = None) -> bool:
        """Queue one job insert (fire-and-forget unless `callback` is given); returns as `submit`."""
        return self.submit(ENQUEUE, job, callback)

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
        get = self._queue.get
        stopping = False
        try:
            while not stopping:
                ops = self._due_later()
                if self._carry:
                    ops, self._carry = self._carry + ops, []
                if not ops:
                    try:
                        ops = [get(timeout=self._later[0][0] - time.monotonic()) if self._later else get()]
                    except queue.Empty:
                        continue
                ops = self._gather(ops)
                if any(op[0] == _STOP for op in ops):
                    stopping = True
                    ops = [op for op in ops if op[0] != _STOP]
                elif len(ops) > self._batch_max:  # a loop turn's item past the limit: the rest goes next
                    ops, self._carry = ops[:self._batch_max], ops[self._batch_max:]
                for start in range(0, len(ops), self._batch_max):  # one group, unless stopping
                    self._apply_ops(ops[start:start + self._batch_max])
        finally:
            self._closed = True
            try:
                self.journal.close()
            finally:
                self._fail_leftovers()
                self.loop.call_soon_threadsafe(_settle, self._done, None)

    def _gather(self, items: list[Op]) -> list[Op]:
        """The ops of `items` and of what else is queued, up to `batch_max` ops (a loop turn's
        item is taken whole)."""
        get_nowait = self._queue.get_nowait
        count = sum(len(item[1]) if item[0] == _TURN else 1 for item in items)
        while count < self._batch_max:
            try:
                item = get_nowait()
            except queue.Empty:
                break
            items.append(item)
            count += len(item[1]) if item[0] == _TURN else 1
        return self._unpack(items)

    def _unpack(self, items: list[Op]) -> list[Op]:
        """The ops of queue items, a loop turn's item expanded in place."""
        if not any(item[0] == _TURN for item in items):
            return items
        ops: list[Op] = []
        for item in items:
            if item[0] == _TURN:
                self._taken += len(item[1])
                ops.extend(item[1])
            else:
                ops.append(item)
        return ops

    def _apply_ops(self, ops: list[Op]) -> None:
        """Apply `ops` in one group, and then its OUTSIDE ops, each outside any transaction."""
        outside = [op for op in ops if op[0] == OUTSIDE]
        if outside:
            ops = [op for op in ops if op[0] != OUTSIDE]
        if ops:
            self._apply(ops)
        for op in outside:
            self._apply_outside(op)

    def _fail_leftovers(self) -> None:
        """Answer every op submitted after the stop, or still waiting to be tried again: it was not applied."""
        error = JournalError("the journal writer has stopped; the op was not applied")
        results: list[tuple[Callback, Any, BaseException | None]] = []
        later, self._later = self._later, []
        results.extend((op[2], None, error) for _, _, op in later if op[2] is not None)
        carry, self._carry = self._carry, []
        results.extend((op[2], None, error) for op in carry if op[2] is not None)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            results.extend((op[2], None, error) for op in self._unpack([item]) if op[2] is not None)
        if results:
            self.loop.call_soon_threadsafe(self._deliver, results, set())

    def _apply(self, ops: list[Op]) -> None:
        """Apply `ops` in one transaction; if it fails, recover without dropping any op.

        A transient failure (deadlock, serialization failure, lock wait past the journal's
        limit, connection lost before COMMIT) runs the whole group once more. If it fails
        again, or for a lasting reason, the ops of the statement that failed are split off:
        the others are applied without them, and they are halved until the op that cannot
        succeed is alone. That op is tried again later if the failure was transient, else
        answered with its own error. A failure before any statement ran (the journal is
        unreachable) answers every op with it: no op is to blame.
        """
        try:
            group = self._commit(ops)
        except _GroupFailed as failed:
            if failed.error.transient and failed.phase is not None:
                logger.warning("journal group of %d ops failed (%s); trying it again", len(ops), failed.error)
                try:
                    group = self._commit(ops)
                except _GroupFailed as again:
                    self._recover(ops, again)
                    return
            else:
                self._recover(ops, failed)
                return
        for delay, op in group.aside:
            self._try_later(delay, op)
        if group.events and self.events is not None:
            self.events.emit(group.events)
        queues = group.queues - group.drained  # where the group's own leases left jobs, or none looked
        # jobs their flow key admitted in this group (a job of their key ended): ready work
        queues |= self.journal.take_admitted()  # type: ignore[union-attr]
        if group.results or queues:
            self.loop.call_soon_threadsafe(self._deliver, group.results, queues, group.leased)

    def _commit(self, ops: list[Op]) -> "_Group":
        """One transaction for `ops`; raises `_GroupFailed` naming the phase that failed."""
        journal = self.journal
        assert journal is not None
        ops.sort(key=_kind)  # stable: keeps submission order within a kind
        group = _Group()
        if self.events is not None and self.events.active:
            group.events = []
        stats = self.stats
        stats.group_started = began = time.monotonic()
        phase: int | None = None  # None: before the first statement; a kind; COMMIT_PHASE
        try:
            with journal.transaction():
                i, n = 0, len(ops)
                while i < n:
                    kind = phase = ops[i][0]
                    j = i
                    while j < n and ops[j][0] == kind:
                        j += 1
                    self._apply_kind(journal, kind, ops[i:j], group)
                    i = j
                phase = COMMIT_PHASE
        except Exception as exc:
            stats.group_started = 0.0
            stats.failed_commits += 1
            stats.last_error = str(exc) or type(exc).__name__
            # an exception of another kind came from an op's own values or function (a CALL)
            error = exc if isinstance(exc, JournalError) else JournalError(stats.last_error, refused=True)
            raise _GroupFailed(error, phase, exc) from None
        stats.group_started = 0.0
        took = time.monotonic() - began
        stats.commit_seconds[bisect.bisect_left(COMMIT_BUCKETS, took)] += 1
        stats.commit_seconds_sum += took
        stats.group_sizes[bisect.bisect_left(GROUP_BUCKETS, len(ops))] += 1
        for name, n in group.tally.items():
            setattr(stats, name, getattr(stats, name) + n)
        stats.commits += 1
        stats.last_error = None
        stats.ops += len(ops)
        stats.max_group = max(stats.max_group, len(ops))
        return group

    def _recover(self, ops: list[Op], failed: "_GroupFailed") -> None:
        error, phase = failed.error, failed.phase
        if error.maybe_committed:  # the COMMIT's outcome is unknown
            self._after_unknown_commit(ops, failed)
            return
        if phase is None or phase == COMMIT_PHASE or not (error.transient or error.refused):
            # unreachable, full, an I/O error: no op is to blame, and none would fare better alone
            logger.error("journal commit failed for %d ops: %s", len(ops), error,
                         exc_info=failed.cause if not isinstance(failed.cause, JournalError) else None)
            self._answer(ops, failed.cause)
            return
        suspects = [op for op in ops if op[0] == phase]
        others = [op for op in ops if op[0] != phase]
        if others:
            self._apply(others)
        if len(suspects) > 1:
            half = len(suspects) // 2
            self._apply(suspects[:half])
            self._apply(suspects[half:])
            return
        op = suspects[0]
        tries = op[3] if len(op) > 3 else 0  # type: ignore[misc]
        if error.transient and tries < RETRY_TRIES:
            delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** tries) * (0.5 + random.random())
            logger.warning("journal op %s failed (%s); trying it again in %.2f s", _KIND_NAMES[op[0]], error, delay)
            self._try_later(delay, (op[0], op[1], op[2], tries + 1))
            return
        logger.error("journal op %s failed: %s", _KIND_NAMES[op[0]], error,
                     exc_info=failed.cause if not isinstance(failed.cause, JournalError) else None)
        self._answer([op], failed.cause)

    def _after_unknown_commit(self, ops: list[Op], failed: "_GroupFailed") -> None:
        """The group may or may not be applied: run again what is safe to run twice, answer the rest."""
        again = [op for op in ops if op[0] in IDEMPOTENT]
        rest = [op for op in ops if op[0] not in IDEMPOTENT]
        logger.error("journal commit of %d ops had an unknown outcome (%s): applying %d again, failing %d",
                     len(ops), failed.error, len(again), len(rest))
        self._answer(rest, failed.cause)
        if again:
            self._apply(again)

    def _answer(self, ops: Sequence[Op], error: BaseException) -> None:
        results = [(op[2], None, error) for op in ops if op[2] is not None]
        if results:
            self.loop.call_soon_threadsafe(self._deliver, results, set())

    def _try_later(self, delay: float, op: Op) -> None:
        heapq.heappush(self._later, (time.monotonic() + delay, next(self._seq), op))

    def _due_later(self) -> list[Op]:
        """The ops put aside whose time to be tried again has come."""
        if not self._later:
            return []
        now, due = time.monotonic(), []
        while self._later and self._later[0][0] <= now:
            due.append(heapq.heappop(self._later)[2])
        return due

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
        ops: Sequence[Op],
        group: "_Group",
    ) -> None:
        """Apply the group's ops of one kind; a statement that fails raises (the group recovers)."""
        results, tally = group.results, group.tally
        if kind == ENQUEUE:
            jobs = [op[1] for op in ops]
            refused: list[tuple[NewJob, QueueFull]] = []  # past a queue's max_depth: answered, not inserted
            journal.enqueue(jobs, refused=refused)
            if refused:
                full = {id(job): error for job, error in refused}
                results.extend((op[2], None, full[id(op[1])]) for op in ops if id(op[1]) in full and op[2] is not None)
                told = [full[id(op[1])] for op in ops if id(op[1]) in full and op[2] is None]
                if told:  # sent with `tell`: nobody waits for the answer, so it is said here
                    logger.warning("%d jobs sent with tell were not added: %s", len(told), told[-1])
                ops = [op for op in ops if id(op[1]) not in full]
                jobs = [op[1] for op in ops]
            tally["jobs_enqueued"] += len(jobs)
            group.queues.update(job.queue for job in jobs)
            keys = [job.unique_key for job in jobs if job.unique_key is not None]
            # in the same transaction: the id that holds each unique key (ours, or the holder's)
            holders = journal.holders(keys) if keys else {}
            # a job discarded over its concurrency key's limit is answered None (on_conflict="discard")
            discarded = discarded_ids(journal, [job for job in jobs if job.discard_over_limit])
            results.extend((op[2], None if op[1].id in discarded
                            else holders.get(op[1].unique_key, op[1].id) if op[1].unique_key else op[1].id, None)
                           for op in ops if op[2] is not None)
            if group.events is not None:  # those a unique key let in (a repeated id is not told apart)
                group.events.extend(NodeEvent("enqueued", j.id, j.task, j.queue, ready_at=j.run_at) for j in jobs
                                    if j.unique_key is None or holders.get(j.unique_key) == j.id)
            return
        if kind in (COMPLETE, RELEASE):  # args are lists of (job_id, lease_id); one statement for all
            pairs = [pair for op in ops for pair in op[1]]
            busy: list[tuple[str, int]] = []
            if kind == COMPLETE:
                kept: dict[str, KeptResult] = {}
                for op in ops:
                    if type(op[1]) is Completions:
                        kept.update(op[1].results)
                accepted = journal.complete(pairs, busy=busy, results=kept or None)
                self._tell_watchers(journal, pairs, group)
                if group.events is not None:
                    group.events.extend(_succeeded_events(journal, pairs, busy, accepted))
                tally["jobs_acked"] += accepted
                tally["stale_acks"] += len(pairs) - accepted - len(busy)
            else:
                journal.release(pairs, busy=busy)
            self._put_busy_aside(kind, busy, ops, group)
            results.extend((op[2], None, None) for op in ops if op[2] is not None)
            return
        if kind == FAIL:
            endings: list[Ending] = [e for op in ops for e in op[1]]
            busy_endings: list[Ending] = []
            accepted = self._settle_endings(journal, endings, busy_endings, group)
            self._tell_watchers(journal, endings, group)
            tally["attempts_failed"] += accepted
            tally["stale_acks"] += len(endings) - accepted - len(busy_endings)
            self._put_busy_aside(FAIL, busy_endings, ops, group)
            results.extend((op[2], None, None) for op in ops if op[2] is not None)
            return
        if kind == LEASE:
            for op in ops:
                lease: Lease = op[1]
                limit = lease.limit() if callable(lease.limit) else lease.limit
                leased = journal.lease(lease.queues, lease.owner, limit, lease.lease_for)
                wait = getattr(journal, "rate_wait", None)
                if wait is not None and lease.rate_waits is not None:
                    lease.rate_waits.append(wait)
                group.leased.add(lease.owner)  # it ran after the group's inserts: it saw them
                if len(leased) < limit:  # and took every ready job of its queues
                    group.drained.update(lease.queues)
                if op[2] is not None:
                    results.append((op[2], leased, None))
            return
        for op in ops:
            result = self._single(journal, kind, op[1], group)
            if op[2] is not None:
                results.append((op[2], result, None))

    def _tell_watchers(self, journal: Journal, answers: Sequence[tuple[Any, ...]], group: "_Group") -> None:
        """Read, in the group's transaction, the outcome of each answered job someone waits for;
        `on_outcome` gets the final ones once the group has committed (its waiters are pushed)."""
        watched = self.watched
        if not watched or self.on_outcome is None:  # no waiter: one truth test per group
            return
        for answer in answers:
            if answer[0] in watched:
                outcome = journal.result(answer[0])
                if outcome is not None and outcome.state in TERMINAL_STATES:
                    group.results.append((self._outcome_callback, outcome, None))

    def _outcome_callback(self, outcome: Any, _error: BaseException | None) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _put_busy_aside(self, kind: int, items: list[Any], ops: Sequence[Op], group: "_Group") -> None:
        """Answers whose rows another transaction holds: tried again shortly, in a later group.

        That transaction (another node's rescue, a session paused inside a transaction)
        ends within the journal's limits: the answers are then either applied or stale.
        Until then they wait here, not in the database, so no group waits on them.
        """
        if not items:
            return
        group.tally["busy_retries"] += len(items)
        tries = 1 + max((op[3] for op in ops if len(op) > 3), default=0)  # type: ignore[misc]
        if tries > BUSY_TRIES:
            logger.warning("%d %s answers stayed locked by another transaction for %d tries; leaving them "
                           "to the lease expiry", len(items), _KIND_NAMES[kind], BUSY_TRIES)
            return
        group.aside.append((min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (tries - 1)), (kind, items, None, tries)))

    def _single(self, journal: Journal, kind: int, arg: Any, group: "_Group") -> Any:
        if kind == RELEASE:
            return journal.release(arg)
        if kind == RECLAIM:
            reclaim: Reclaim = arg
            return self._settle(journal, reclaim.select(journal), lambda _: (reclaim.end, reclaim.reason, None, None),
                                group)
        if kind == RENEW:
            return journal.renew(arg.owners, arg.lease_for)
        if kind == PROMOTE:
            return journal.promote()
        if kind == CALL:  # a read or a transition given as fn(journal)
            return arg(journal)
        raise ValueError(f"unknown journal op {kind}")

    def _settle_endings(self, journal: Journal, endings: Sequence[Ending], busy_endings: list[Ending],
                        group: "_Group") -> int:
        """Settle attempts that ended as the workers or the dispatcher said; stale leases are skipped,
        and those whose rows another transaction holds go to `busy_endings`."""
        by_job = {e.job_id: e for e in endings}
        busy: list[tuple[str, int]] = []
        current = journal.attempts([(e.job_id, e.lease_id) for e in endings], busy=busy)
        busy_endings.extend(by_job[job_id] for job_id, _ in busy)
        return self._settle(journal, current, lambda a: by_job[a.job_id][2:], group)

    def _settle(self, journal: Journal, attempts: Sequence[Attempt],
                end_of: Callable[[Attempt], tuple[AttemptEnd, str, str | None, float | None]], group: "_Group") -> int:
        """Decide each attempt's outcome and store it; returns how many the journal accepted."""
        if not attempts:
            return 0
        now = time.time()
        failures = []
        for attempt in attempts:
            end, error, traceback, delay = end_of(attempt)
            outcome = self._decide(attempt, end, delay)
            retry_at = None if outcome.retry_in is None else now + outcome.retry_in
            failures.append(Failure(attempt.job_id, attempt.lease_id, error, outcome.state, retry_at, traceback))
        accepted = journal.fail(failures)
        if accepted == len(failures):  # read in this transaction: each is current (else: not told apart)
            tally = group.tally
            for failure, attempt in zip(failures, attempts):
                kind = _FAILURE_EVENTS.get(failure.state, "failed")
                tally[_FAILURE_TALLY[kind]] += 1
                if group.events is not None:
                    group.events.append(NodeEvent(kind, attempt.job_id, attempt.task, attempt=attempt.attempt,
                                                  error=failure.error, ready_at=failure.retry_at))
        return accepted

    def _deliver(self, results: list[tuple[Callback, Any, BaseException | None]], queues: set[str],
                 leased: Collection[str] = ()) -> None:
        for cb, result, error in results:
            try:
                cb(result, error)
            except Exception:
                logger.exception("journal callback failed")
        if queues and self._on_enqueued is not None:
            self._on_enqueued(queues, leased)


_FAILURE_EVENTS = {"retry": "retried", "ready": "retried", "dead": "dead", "failed": "failed", "cancelled": "cancelled"}
_FAILURE_TALLY = {"retried": "jobs_retried", "dead": "jobs_dead", "failed": "jobs_failed", "cancelled": "jobs_failed"}


def _succeeded_events(journal: Journal, pairs: Sequence[tuple[str, int]], busy: Sequence[tuple[str, int]],
                      accepted: int) -> list[NodeEvent]:
    """The ``succeeded`` events of a COMPLETE statement: every pair not busy, unless some were
    stale; then the state of each is read (in the same transaction) to tell them apart."""
    skipped = set(busy)
    candidates = [pair for pair in pairs if pair not in skipped]
    if accepted < len(candidates):
        states = {job_id: journal.result(job_id) for job_id, _ in candidates}
        candidates = [pair for pair in candidates
                      if (r := states[pair[0]]) is not None and r.state == "succeeded"][:accepted]
    return [NodeEvent("succeeded", job_id) for job_id, _ in candidates]


def _settle(fut: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if fut is None or fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(None)


