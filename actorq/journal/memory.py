"""The in-memory journal: the `Journal` protocol on plain Python structures, for tests.

`MemoryJournal` keeps every job, error, schedule, declaration and limit in dicts of one
`MemoryStore`, guarded by one lock, with the time read from an injected clock. It follows
the SQLite journal (the reference) method by method: the same return values, the same
errors, the same flow-key admissions (docs/flow-control-keys.md), queue limits, rates and
circuit breakers (docs/rate-limits-and-breakers.md). The journal contract suite runs
against it as against SQLite and PostgreSQL, so it cannot drift from them.

Nothing is durable: the store lives as long as the process. A transaction
(``with journal.transaction():``) is atomic: on an exception the store goes back to what it
was when the outermost block began (a copy taken then). Several `MemoryJournal` handles may
share one store (`MemoryJournal.reopen`), as connections share a file; like SQLite, one
node attaches to it (`attach_node`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Collection, Iterator, Mapping, Sequence

from actorq.errors import JournalError, JournalLocked, QueueFull
from actorq.journal import _limits
from actorq.journal.protocol import (
    ADMITTED_STATES, LIVE_STATES, SCHEDULE_SOURCES, TERMINAL_STATES, Attempt, BreakerState, ErrorRecord, Failure,
    JobDetail, JobInfo, JobResult, JobState, JobSummary, KeptResult, LeasedJob, NewJob, QueueLimits, QueueStats,
    ScheduleRow, STATS_KEEP, KEY_ROWS_PRUNED_PER_TICK, KEYS_PER_TICK, TaskDefaults, check_clear, check_failures,
    check_listing, check_prune, stats_slot, stats_slots,
)

__all__ = ["MemoryJournal", "MemoryStore"]

logger = logging.getLogger(__name__)

_ADMITTED = frozenset(ADMITTED_STATES)
_LIVE = frozenset(LIVE_STATES)
_CATCH_UPS = ("none", "last", "all")


@dataclass
class _Job:
    id: str
    queue: str
    task: str
    payload: bytes
    state: JobState
    priority: int
    run_at: float
    max_attempts: int
    created_at: float
    unique_key: str | None
    timeout: float | None
    unique_until: float | None
    flow_key: str | None
    flow_limit: int | None
    attempts: int = 0
    finished_at: float | None = None
    lease_id: int | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    last_error: str | None = None
    last_traceback: str | None = None
    result: bytes | None = None
    result_expires: float | None = None
    errors: tuple[ErrorRecord, ...] = ()  # replaced, never changed in place: a snapshot copies the job alone

    def clear_lease(self) -> None:
        self.lease_id = self.lease_owner = self.lease_expires = None

    def summary(self) -> JobSummary:
        return JobSummary(self.id, self.queue, self.task, self.state, self.priority, self.attempts,
                          self.max_attempts, self.run_at, self.created_at, self.finished_at, self.lease_owner,
                          self.last_error)

    def attempt(self) -> Attempt:
        assert self.lease_id is not None
        return Attempt(self.id, self.lease_id, self.task, self.attempts, self.max_attempts)


@dataclass
class _Bucket:
    """A token bucket's stored columns (a queue's or a task's rate)."""

    per_second: float | None = None
    burst: int | None = None
    tokens: float | None = None
    tokens_at: float | None = None


@dataclass
class _State:
    """Everything a store holds: replaced whole by its copy when a transaction rolls back."""

    jobs: dict[str, _Job] = field(default_factory=dict)
    queues: dict[str, tuple[QueueLimits, _Bucket]] = field(default_factory=dict)
    tasks: dict[str, tuple[TaskDefaults, _Bucket]] = field(default_factory=dict)
    breakers: dict[str, tuple[str, str, float | None]] = field(default_factory=dict)  # state, failed_at, opened_at
    # per-key rules: (task, flow key) -> (its bucket and breaker, due_at, idle_at)
    keys: dict[tuple[str, str], tuple[_limits.KeyRow, float | None, float | None]] = field(default_factory=dict)
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)
    paused: dict[str, float] = field(default_factory=dict)
    # what SQLite's counts triggers keep: jobs per (queue, state), changed by `_count` alone
    tally: dict[tuple[str, str], int] = field(default_factory=dict)
    # per-queue slots (`Journal.queue_stats`): (queue, slot) -> [finished, failed, leased, wait_sum, wait_max]
    slots: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def _snapshot(state: _State) -> _State:
    """A copy of `state` that its later changes leave alone: every mutable row is copied (a job's
    fields are values or immutable; tuples and named tuples are shared)."""
    return _State(
        jobs={job_id: copy.copy(job) for job_id, job in state.jobs.items()},
        queues={name: (limits, copy.copy(bucket)) for name, (limits, bucket) in state.queues.items()},
        tasks={name: (task, copy.copy(bucket)) for name, (task, bucket) in state.tasks.items()},
        breakers=dict(state.breakers), keys=dict(state.keys), schedules=dict(state.schedules),
        paused=dict(state.paused), tally=dict(state.tally), slots={key: list(row) for key, row in state.slots.items()})


class MemoryStore:
    """The data one or more `MemoryJournal` handles share, and the one lock that guards it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state = _State()
        self.node: MemoryJournal | None = None  # the handle that attached a node, if any


_names = itertools.count(1)


class MemoryJournal:
    """A `Journal` held in this process's memory (tests; nothing survives the process).

    Args:
        store: the data to use; None: a new, empty store. Handles sharing a store see each
            other's commits (as connections to one SQLite file do).
        clock: wall clock returning Unix seconds (inject one to move time in a test).
        name: shown in the url (``memory://<name>``); None: a fresh number.
    """

    shared: ClassVar[bool] = False
    """One node per store, like an SQLite file: that node leads every once-only duty."""
    notifies: ClassVar[bool] = False
    """No wake-ups from elsewhere: a node polls (the writer wakes queues it admitted to)."""

    def __init__(self, store: MemoryStore | None = None, *, clock: Callable[[], float] = time.time,
                 name: str | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.url = f"memory://{name if name is not None else next(_names)}"
        self._clock = clock
        self._depth = 0  # nesting of `transaction` blocks on this handle
        self._freed: set[str] = set()  # flow keys this transaction freed a slot of
        self._admitted: set[str] = set()
        self._closed = False
        self._node_concurrency: dict[str, int] = {}
        self._node_prefix = ""
        self.rate_wait: float | None = None
        """After a lease: seconds until the next token (or the end of a breaker's cool-down) that
        would let more through, or None (as `SQLiteJournal.rate_wait`)."""

    def reopen(self) -> MemoryJournal:
        """Another handle on the same store and clock (another "connection")."""
        return MemoryJournal(self.store, clock=self._clock, name=self.url[len("memory://"):])

    @property
    def _s(self) -> _State:
        return self.store.state

    # -- transactions ----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All of the block or none of it; nested blocks join the outer one."""
        if self._closed:
            raise JournalError(f"journal {self.url} is closed")
        with self.store.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            saved = _snapshot(self.store.state)
            admitted_before = set(self._admitted)
            self._depth = 1
            try:
                yield
                if self._freed:
                    self._admit_freed()
            except BaseException:
                self.store.state = saved
                self._admitted = admitted_before
                self._freed.clear()
                raise
            finally:
                self._depth = 0

    @contextmanager
    def _reading(self) -> Iterator[None]:
        if self._closed:
            raise JournalError(f"journal {self.url} is closed")
        with self.store.lock:
            yield

    @property
    def outage(self) -> str | None:
        """Always None: memory is never unreachable."""
        return None

    def maintain(self) -> str | None:
        """Drop the queue slots older than `STATS_KEEP`; refuses, as the other journals do, to run
        inside a transaction."""
        if self._depth:
            raise JournalError(f"journal {self.url}: maintain() inside a transaction")
        with self.transaction():
            cutoff = stats_slot(self._clock() - STATS_KEEP)
            for key in [key for key in self._s.slots if key[1] < cutoff]:
                del self._s.slots[key]
        return None

    def attach_node(self) -> None:
        """Declare the node of this store; a second handle's node is refused.

        Raises:
            JournalLocked: another handle on the store attached a node.
        """
        with self.store.lock:
            if self.store.node is not None and self.store.node is not self:
                raise JournalLocked(f"another node is running on journal {self.url}; a memory journal allows one node")
            self.store.node = self

    # -- state changes: what SQLite's flow-key triggers do ---------------------------------
    def _count(self, queue: str, state: JobState, by: int) -> None:
        key = (queue, state.value)
        self._s.tally[key] = self._s.tally.get(key, 0) + by

    def _slot(self, queue: str, at: float) -> list[float]:
        return self._s.slots.setdefault((queue, stats_slot(at)), [0, 0, 0, 0.0, 0.0])

    def _set(self, job: _Job, state: JobState) -> None:
        """Move `job` to `state`, keeping the counts and, for a job reaching a final state, its
        queue's slot of now (SQLite's triggers)."""
        before = job.state
        if before == state:
            return
        self._count(job.queue, before, -1)
        self._count(job.queue, state, 1)
        job.state = state
        if state in TERMINAL_STATES and before not in TERMINAL_STATES:
            row = self._slot(job.queue, self._clock())
            row[0] += 1
            row[1] += state in (JobState.FAILED, JobState.DEAD)

    def _move(self, job: _Job, state: JobState) -> None:
        before = job.state
        self._set(job, state)
        if job.flow_key is None:
            return
        if before in _ADMITTED and state in TERMINAL_STATES:
            self._freed.add(job.flow_key)
        elif state == JobState.BLOCKED and before != JobState.BLOCKED:
            self._freed.add(job.flow_key)

    def _delete(self, job: _Job) -> None:
        del self._s.jobs[job.id]
        self._count(job.queue, job.state, -1)
        if job.flow_key is not None and job.state in _ADMITTED:
            self._freed.add(job.flow_key)

    def _admitted_of(self, key: str) -> int:
        return sum(1 for j in self._s.jobs.values() if j.flow_key == key and j.state in _ADMITTED)

    def _admit_freed(self) -> None:
        freed = sorted(self._freed)
        self._freed.clear()
        self._admit(freed, self._clock())

    def _admit(self, keys: Collection[str], now: float) -> int:
        """Fill the free slots of `keys` from their blocked jobs, in id order, within the
        per-key rules of the task of each key's first blocked job; returns how many were made ready."""
        ruled = self._key_ruled()
        ready = 0
        for key in sorted(keys):
            blocked = sorted((j for j in self._s.jobs.values() if j.flow_key == key and j.state == JobState.BLOCKED),
                             key=lambda j: j.id)
            if not blocked:
                continue
            admitted = self._admitted_of(key)
            room = max(0, (blocked[0].flow_limit or 0) - admitted)
            rules = ruled.get(blocked[0].task)
            if rules is not None and room > 0:  # no free slot: a job of the key finishing comes back here
                stored = self._s.keys.get((rules.name, key))
                room, row, wait = _limits.key_room(rules, stored[0] if stored else None, now, room, admitted)
                taken = min(room, len(blocked))
                row, due, idle = _limits.key_spent(rules, row, taken, now, wait)
                self._s.keys[(rules.name, key)] = (row, due, idle)
            for job in blocked[:room]:
                self._set(job, JobState.SCHEDULED if job.run_at > now else JobState.READY)
                if job.state == JobState.READY:
                    self._admitted.add(job.queue)
                    ready += 1
        return ready

    def _key_ruled(self) -> dict[str, TaskDefaults]:
        return {name: t for name, (t, _) in self._s.tasks.items() if _limits.has_key_rules(t)}

    def _key_failed(self, job: _Job, now: float) -> None:
        """Count a failed attempt of a keyed job in its key's breaker (its task declares one)."""
        if job.flow_key is None:
            return
        rules = self._key_ruled().get(job.task)
        if rules is None or rules.key_circuit_breaker is None:
            return
        stored = self._s.keys.get((job.task, job.flow_key))
        self._s.keys[(job.task, job.flow_key)] = _limits.key_failed(rules, stored[0] if stored else None, now)

    def key_breakers(self, limit: int) -> tuple[list[BreakerState], dict[str, int]]:
        """The per-key breakers not closed: at most `limit`, and how many by state (see `Journal.key_breakers`)."""
        with self._reading():
            ruled = self._key_ruled()
            rows = sorted(((task, key, row) for (task, key), (row, _, _) in self._s.keys.items()
                           if row.state != _limits.CLOSED and task in ruled
                           and ruled[task].key_circuit_breaker is not None),
                          key=lambda r: (r[2].state != _limits.OPEN, r[0], r[1]))
            shown = [_limits.key_breaker_state(task, key, row, ruled[task].key_circuit_breaker.cool_down)  # type: ignore[union-attr]
                     for task, key, row in rows[:max(0, limit)]]
            return shown, _limits.key_breaker_counts([row.state for _, _, row in rows])

    def _admit_due_keys(self, now: float) -> int:
        """Admit the keys whose rules let them through again (`KEYS_PER_TICK` at most), then
        delete idle key rows (`KEY_ROWS_PRUNED_PER_TICK` at most); returns the jobs made ready."""
        if not self._s.keys:
            return 0
        due = sorted(((d, name) for name, (_, d, _) in self._s.keys.items() if d is not None and d <= now))
        due = due[:KEYS_PER_TICK]
        for _, name in due:
            row, _, idle = self._s.keys[name]
            self._s.keys[name] = (row, None, idle)
        ready = self._admit({key for _, (_, key) in due}, now)
        idle_rows = [name for name, (_, d, i) in self._s.keys.items() if d is None and i is not None and i <= now]
        for name in idle_rows[:KEY_ROWS_PRUNED_PER_TICK]:
            del self._s.keys[name]
        return ready

    def _keys_due(self, now: float) -> bool:
        return any((d is not None and d <= now) or (d is None and i is not None and i <= now)
                   for _, d, i in self._s.keys.values())

    def take_admitted(self) -> set[str]:
        """The queues keyed jobs were admitted to (made ready) since the last call."""
        admitted, self._admitted = self._admitted, set()
        return admitted

    # -- enqueue -----------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], *, refused: list[tuple[NewJob, QueueFull]] | None = None) -> int:
        """Insert `jobs` (see `Journal.enqueue`); returns the number inserted.

        Raises:
            QueueFull: a job would take its queue past ``max_depth`` (`refused` not given).
            JournalError: a job the schema refuses (``max_attempts`` below 1); nothing is inserted.
        """
        with self.transaction():
            stored = self.queue_limits()
            full = _limits.depth_limited(stored, jobs)
            if full:
                present = {j.id for j in jobs if j.id in self._s.jobs}
                rooms = {q: (self._depth_of(q), stored[q].max_depth) for q in full}
                jobs = _limits.admit(jobs, rooms, refused, present)  # type: ignore[arg-type]
            return self._insert(jobs)

    def _depth_of(self, queue: str) -> int:
        waiting = (JobState.READY, JobState.BLOCKED, JobState.SCHEDULED, JobState.RETRY)
        return sum(1 for j in self._s.jobs.values() if j.queue == queue and j.state in waiting)

    def _insert(self, jobs: Sequence[NewJob]) -> int:
        now = self._clock()
        for j in jobs:
            if j.max_attempts < 1:
                raise JournalError(f"journal {self.url}: job {j.id!r} refused: max_attempts must be >= 1",
                                   refused=True)
        if any(j.flow_key is not None for j in jobs):
            jobs = sorted(jobs, key=lambda j: j.id)
        rest = [j for j in jobs if not j.discard_over_limit]
        alone = [j for j in jobs if j.discard_over_limit]
        ordinals, again = _limits.key_ordinals(rest)  # one at a time: the first of a key is admitted
        firsts = [nth == 0 for nth in ordinals]
        ruled = self._key_ruled()
        if ruled:  # a task's keyed jobs with per-key rules are inserted blocked, then admitted by them
            held = [j.flow_key is not None and j.task in ruled for j in rest]
            firsts = [first and not hold for first, hold in zip(firsts, held)]
            again = sorted(set(again) | {j.flow_key for j, hold in zip(rest, held) if hold})  # type: ignore[misc]
        added = sum(self._insert_one(j, now, first) for j, first in zip(rest, firsts))
        self._admit(again, now)
        for j in alone:
            added += self._insert_one(j, now, j.task not in ruled)
            self._admit([j.flow_key], now)  # type: ignore[list-item]
        return added

    def _insert_one(self, j: NewJob, now: float, first: bool) -> int:
        jobs = self._s.jobs
        if j.id in jobs:
            return 0
        if j.unique_key is not None and any(
                p.unique_key == j.unique_key and ((p.unique_until is not None and p.unique_until > now)
                                                  or p.state in _LIVE) for p in jobs.values()):
            return 0
        key, limit = j.flow_key, j.flow_limit
        if j.discard_over_limit and self._admitted_of(key) >= limit:  # type: ignore[arg-type,operator]
            return 0
        state = JobState.SCHEDULED if j.run_at is not None and j.run_at > now else JobState.READY
        if key is not None and not (
                first and not any(b.flow_key == key and b.state == JobState.BLOCKED for b in jobs.values())
                and self._admitted_of(key) < limit):  # type: ignore[operator]
            state = JobState.BLOCKED
        jobs[j.id] = _Job(j.id, j.queue, j.task, j.payload, state, j.priority,
                          j.run_at if j.run_at is not None else now, j.max_attempts, now, j.unique_key,
                          j.timeout, None if j.unique_for is None else now + j.unique_for, key, limit)
        self._count(j.queue, state, 1)
        return 1

    def holders(self, keys: Sequence[str]) -> dict[str, str]:
        """``{unique key: id of the job holding it}`` (a live holder wins over one inside its period)."""
        wanted = set(keys)
        now = self._clock()
        found: dict[str, str] = {}
        with self._reading():
            for j in self._s.jobs.values():
                if j.unique_key in wanted and j.unique_until is not None and j.unique_until > now:
                    found[j.unique_key] = j.id  # type: ignore[index]
            for j in self._s.jobs.values():
                if j.unique_key in wanted and j.state in _LIVE:
                    found[j.unique_key] = j.id  # type: ignore[index]
        return found

    # -- leases ------------------------------------------------------------------------------
    def lease(self, queues: Sequence[str], owner: str, limit: int, lease_for: float) -> list[LeasedJob]:
        """Lease up to `limit` ready jobs of `queues` (see `Journal.lease`), by priority then id."""
        self.rate_wait = None
        if limit <= 0 or not queues:
            return []
        now = self._clock()
        lease = (random.getrandbits(62) + 1, owner, now + lease_for)
        rows: list[_Job] = []
        with self.transaction():
            ruled = _limits.lease_ruled(self.task_rules(), queues)
            stored = self.queue_limits()
            limited = sorted(q for q in queues if (q in stored and (stored[q].concurrency is not None
                                                                    or stored[q].rate is not None))
                             or q in self._node_concurrency)
            if limited:
                for queue in limited:
                    take, bucket = self._lease_room(queue, limit - len(rows), now)
                    got = self._lease_some([queue], take, ruled, lease, now) if take > 0 else []
                    rows += got
                    if bucket is not None:
                        self._spend(self._s.queues[queue][1], bucket, len(got), now)
                limit -= len(rows)
                queues = [q for q in queues if q not in limited]
            if limit > 0 and queues:
                rows += self._lease_some(queues, limit, ruled, lease, now)
            for queue, (taken, wait_sum, wait_max) in _limits.lease_waits(
                    [(j.id, j.queue, j.run_at) for j in rows], now).items():
                row = self._slot(queue, now)
                row[2] += taken
                row[3] += wait_sum
                row[4] = max(row[4], wait_max)
        return [LeasedJob(j.id, j.queue, j.task, j.payload, j.attempts, j.max_attempts, lease[0], j.timeout)
                for j in rows]

    def _take(self, queues: Sequence[str], limit: int, lease: tuple[int, str, float], *,
              task: str | None = None, without: Collection[str] = ()) -> list[_Job]:
        wanted = set(queues)
        paused = self._s.paused
        ready = sorted((j for j in self._s.jobs.values() if j.state == JobState.READY and j.queue in wanted
                        and j.queue not in paused and (task is None or j.task == task) and j.task not in without),
                       key=lambda j: (j.priority, j.id))[:max(0, limit)]
        for j in ready:
            if j.attempts >= j.max_attempts:  # the schema's CHECK (attempts <= max_attempts), as on SQLite
                raise JournalError(f"journal {self.url}: job {j.id!r} has no attempts left to lease "
                                   f"({j.attempts} of {j.max_attempts})", refused=True)
            self._set(j, JobState.LEASED)
            j.attempts += 1
            j.lease_id, j.lease_owner, j.lease_expires = lease
        return ready

    def _lease_some(self, queues: Sequence[str], limit: int, ruled: Sequence[str], lease: tuple[int, str, float],
                    now: float) -> list[_Job]:
        if not ruled:
            return self._take(queues, limit, lease)
        rooms: dict[str, int] = {}
        buckets: dict[str, tuple[float, float]] = {}
        for task in ruled:
            take, bucket = self._task_room(task, limit, now)
            if bucket is not None:
                buckets[task] = bucket
            if take < limit:
                rooms[task] = take
        rows: list[_Job] = []
        for task, room in rooms.items():
            if room > 0 and len(rows) < limit:
                rows += self._take(queues, min(room, limit - len(rows)), lease, task=task)
        if len(rows) < limit:
            rows += self._take(queues, limit - len(rows), lease, without=rooms)
        for task, bucket in buckets.items():
            self._spend(self._s.tasks[task][1], bucket, sum(1 for r in rows if r.task == task), now)
        return rows

    def _leased(self, *, queue: str | None = None, task: str | None = None) -> list[_Job]:
        return [j for j in self._s.jobs.values() if j.state == JobState.LEASED
                and (queue is None or j.queue == queue) and (task is None or j.task == task)]

    def _task_room(self, task: str, limit: int, now: float) -> tuple[int, tuple[float, float] | None]:
        entry = self._s.tasks.get(task)
        if entry is None:
            return limit, None
        declared, b = entry
        if declared.circuit_breaker is not None and limit > 0:
            limit = min(limit, self._breaker_room(task, declared, limit, now))
        bucket = None
        if b.per_second is not None:
            bucket = (_limits.refill(b.tokens or 0.0, b.tokens_at or now, now, b.per_second, b.burst or 0),
                      b.per_second)
            limit = min(limit, _limits.whole(bucket[0]))
        if declared.concurrency is not None and limit > 0:
            limit = min(limit, declared.concurrency - len(self._leased(task=task)))
        return max(0, limit), bucket

    def _breaker_room(self, task: str, declared: TaskDefaults, limit: int, now: float) -> int:
        row = self._s.breakers.get(task)
        breaker = declared.circuit_breaker
        if row is None or breaker is None:
            return limit
        state, failed_at, opened_at = row
        leased = len(self._leased(task=task)) if state != _limits.CLOSED else 0
        room, now_state, wait = _limits.breaker_room(breaker, state, opened_at, now, leased)
        if now_state != state:
            self._s.breakers[task] = (now_state, failed_at, opened_at)
        self.rate_wait = _limits.sooner(self.rate_wait, wait)
        return limit if room is None else room

    def _lease_room(self, queue: str, limit: int, now: float) -> tuple[int, tuple[float, float] | None]:
        entry = self._s.queues.get(queue)
        concurrency = entry[0].concurrency if entry else None
        b = entry[1] if entry else _Bucket()
        bucket = None
        if b.per_second is not None:
            bucket = (_limits.refill(b.tokens or 0.0, b.tokens_at or now, now, b.per_second, b.burst or 0),
                      b.per_second)
            limit = min(limit, _limits.whole(bucket[0]))
        node_limit = self._node_concurrency.get(queue)
        if concurrency is None and node_limit is None:
            return max(0, limit), bucket
        leased = self._leased(queue=queue)
        node_leased = sum(1 for j in leased if (j.lease_owner or "").startswith(self._node_prefix))
        return _limits.room(limit, concurrency, node_limit, len(leased), node_leased), bucket

    def _spend(self, stored: _Bucket, bucket: tuple[float, float], taken: int, now: float) -> None:
        tokens, per_second = bucket
        left = tokens - taken
        if taken:
            stored.tokens, stored.tokens_at = left, now
        self.rate_wait = _limits.sooner(self.rate_wait, _limits.bucket_wait(left, per_second))

    def declare_queues(self, limits: Sequence[QueueLimits], node_prefix: str = "") -> None:
        """Store `limits` (each replaces its queue's) and keep their ``node_concurrency`` for this handle."""
        _limits.check_limits(limits)
        now = self._clock()
        with self.transaction():
            for q in limits:
                old = self._s.queues.get(q.queue)
                bucket = _Bucket()
                if q.rate is not None:
                    rate = _limits.parse_rate(q.rate, q.burst)
                    bucket = _Bucket(rate.per_second, rate.burst, float(rate.burst), now)
                    if old is not None and old[1].tokens is not None:  # a declared bucket keeps its tokens
                        bucket.tokens, bucket.tokens_at = min(old[1].tokens, rate.burst), old[1].tokens_at
                stored = QueueLimits(q.queue, q.concurrency, None, q.max_depth, q.rate,
                                     None if q.rate is None else bucket.burst)
                self._s.queues[q.queue] = (stored, bucket)
        self._node_concurrency = {q.queue: q.node_concurrency for q in limits if q.node_concurrency is not None}
        self._node_prefix = node_prefix

    def queue_limits(self) -> dict[str, QueueLimits]:
        """``{queue: stored limits}`` of every declared queue."""
        with self._reading():
            return {name: limits for name, (limits, _) in self._s.queues.items()}

    # -- the ends of attempts ------------------------------------------------------------------
    def _current(self, job_id: str, lease_id: int) -> _Job | None:
        job = self._s.jobs.get(job_id)
        if job is None or job.state != JobState.LEASED or job.lease_id != lease_id:
            return None
        return job

    def complete(self, acks: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None,
                 results: Mapping[str, KeptResult] | None = None) -> int:
        """Move current ``(job_id, lease_id)`` pairs to succeeded, with their kept results; returns how many."""
        if not acks:
            return 0
        now = self._clock()
        accepted = 0
        with self.transaction():
            for job_id, lease_id in acks:
                job = self._current(job_id, lease_id)
                if job is None:
                    continue
                accepted += 1
                self._move(job, JobState.SUCCEEDED)
                job.finished_at = now
                job.clear_lease()
                kept = (results or {}).get(job_id)
                if kept is not None:
                    job.result, job.result_expires = kept[0], now + kept[1]
            for job_id, _ in acks:  # a probe's success closes its half-open breaker
                job = self._s.jobs.get(job_id)
                if job is not None and job.state == JobState.SUCCEEDED:
                    row = self._s.breakers.get(job.task)
                    declared = self._s.tasks.get(job.task)
                    if row is not None and row[0] == _limits.HALF_OPEN and declared is not None \
                            and declared[0].circuit_breaker is not None:
                        self._s.breakers[job.task] = (_limits.CLOSED, "[]", row[2])
                    if job.flow_key is not None and (job.task, job.flow_key) in self._s.keys:
                        krow, due, idle = self._s.keys[(job.task, job.flow_key)]
                        if krow.state == _limits.HALF_OPEN:  # a key's probe succeeded: its breaker closes
                            krow = krow._replace(state=_limits.CLOSED, failed_at="[]")
                            self._s.keys[(job.task, job.flow_key)] = (krow, due, _limits.key_idle_at(
                                self._s.tasks[job.task][0], krow, now))
        return accepted

    def fail(self, failures: Sequence[Failure]) -> int:
        """Store each decided outcome whose lease is current (see `Journal.fail`); returns how many.

        Raises:
            ValueError: a state `fail` does not store, or RETRY without retry_at; nothing is recorded.
        """
        check_failures(failures)
        now = self._clock()
        accepted = 0
        with self.transaction():
            for f in failures:
                job = self._current(f.job_id, f.lease_id)
                if job is None:
                    continue
                accepted += 1
                state = JobState(f.state)
                self._move(job, state)
                if state == JobState.RETRY:
                    job.run_at = f.retry_at  # type: ignore[assignment]
                job.finished_at = now if state in TERMINAL_STATES else None
                job.last_error, job.last_traceback = f.error, f.traceback
                job.clear_lease()
                job.errors += (ErrorRecord(job.attempts, now, f.error),)
                self._breaker_failed(job.task, now)
                self._key_failed(job, now)
        return accepted

    def _breaker_failed(self, task: str, now: float) -> None:
        declared = self._s.tasks.get(task)
        if declared is None or declared[0].circuit_breaker is None:
            return
        state, failed_at, opened_at = self._s.breakers.get(task, (_limits.CLOSED, "[]", None))
        self._s.breakers[task] = _limits.breaker_failed(declared[0].circuit_breaker, state, failed_at, opened_at, now)

    def release(self, leases: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None) -> int:
        """Return current leases that never started to ready, giving their attempt back; returns how many."""
        moved = 0
        with self.transaction():
            for job_id, lease_id in leases:
                job = self._current(job_id, lease_id)
                if job is not None:
                    self._set(job, JobState.READY)
                    job.attempts -= 1
                    job.clear_lease()
                    moved += 1
        return moved

    def attempts(self, leases: Sequence[tuple[str, int]], *,
                 busy: list[tuple[str, int]] | None = None) -> list[Attempt]:
        """The pairs of `leases` whose lease is current."""
        with self._reading():
            found = {job.id: job.attempt() for job_id, lease_id in leases
                     if (job := self._current(job_id, lease_id)) is not None}
        return list(found.values())

    def _attempts_where(self, keep: Callable[[_Job], bool]) -> list[Attempt]:
        with self._reading():
            return [j.attempt() for j in self._s.jobs.values() if j.state == JobState.LEASED and keep(j)]

    def leased_by(self, owner: str, *, keep: Collection[int] = ()) -> list[Attempt]:
        """Every current lease of `owner` except the lease ids in `keep`."""
        kept = set(keep)
        return self._attempts_where(lambda j: j.lease_owner == owner and j.lease_id not in kept)

    def leased_with_prefix(self, prefix: str) -> list[Attempt]:
        """Every current lease whose owner starts with `prefix` (literally; "" = all)."""
        return self._attempts_where(lambda j: (j.lease_owner or "").startswith(prefix))

    def expired(self) -> list[Attempt]:
        """Every lease whose expiry has passed by the journal's clock."""
        now = self._clock()
        return self._attempts_where(lambda j: j.lease_expires is not None and j.lease_expires < now)

    # -- declarations and schedules ---------------------------------------------------------------
    def declare_tasks(self, tasks: Sequence[TaskDefaults]) -> None:
        """Record the defaults of `tasks` (the last of a name wins).

        Raises:
            ValueError: a rule out of range (as the other journals).
            JournalError: a declaration the schema refuses (``max_attempts`` below 1, an unknown
                ``on_conflict``); none is recorded.
        """
        latest = {t.name: t for t in tasks}
        if not latest:
            return
        _limits.check_task_rules(list(latest.values()))
        for t in latest.values():
            if t.max_attempts < 1 or (t.concurrency_limit is not None and t.concurrency_limit < 1) \
                    or t.on_conflict not in (None, "block", "discard") \
                    or (t.unique_for is not None and t.unique_for <= 0):
                raise JournalError(f"journal {self.url}: task {t.name!r}: declaration refused", refused=True)
        now = self._clock()
        with self.transaction():
            for t in latest.values():
                old = self._s.tasks.get(t.name)
                bucket = _Bucket()
                if t.rate is not None:
                    rate = _limits.parse_rate(t.rate, t.burst)
                    bucket = _Bucket(rate.per_second, rate.burst, float(rate.burst), now)
                    if old is not None and old[1].tokens is not None:
                        bucket.tokens, bucket.tokens_at = min(old[1].tokens, rate.burst), old[1].tokens_at
                    t = t._replace(burst=rate.burst)
                if old is not None and _limits.has_key_rules(old[0]) and not _limits.has_key_rules(t):
                    for name in [name for name in self._s.keys if name[0] == t.name]:
                        del self._s.keys[name]  # declared again without rules per key: its keys' rows go
                self._s.tasks[t.name] = (t, bucket)
                if t.circuit_breaker is None:
                    self._s.breakers.pop(t.name, None)
                else:
                    self._s.breakers.setdefault(t.name, (_limits.CLOSED, "[]", None))

    def task_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its declaration}`` of every declared task with a concurrency, a rate or a breaker."""
        with self._reading():
            return {name: TaskDefaults(t.name, t.queue, t.priority, t.max_attempts, t.unique_for,
                                       concurrency=t.concurrency, rate=t.rate, burst=t.burst,
                                       circuit_breaker=t.circuit_breaker)
                    for name, (t, _) in self._s.tasks.items()
                    if t.concurrency is not None or t.rate is not None or t.circuit_breaker is not None}

    def breakers(self) -> list[BreakerState]:
        """Where each declared circuit breaker stands, by task name."""
        with self._reading():
            out = []
            for task in sorted(self._s.breakers):
                declared = self._s.tasks.get(task)
                if declared is None or declared[0].circuit_breaker is None:
                    continue
                state, failed_at, opened_at = self._s.breakers[task]
                out.append(_limits.breaker_state(task, state, failed_at, opened_at,
                                                 declared[0].circuit_breaker.cool_down))
            return out

    def declared_tasks(self, names: Sequence[str]) -> dict[str, TaskDefaults]:
        """``{name: its declared defaults}`` for those of `names` that were declared."""
        with self._reading():
            return {name: TaskDefaults(t.name, t.queue, t.priority, t.max_attempts, t.unique_for,
                                       t.concurrency_limit, t.on_conflict)
                    for name in dict.fromkeys(names) if (entry := self._s.tasks.get(name)) is not None
                    for t in [entry[0]]}

    def put_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        """Store `schedules`; a stored name keeps its added_at and last_fired.

        Raises:
            JournalError: a row with an unknown ``catch_up`` or ``source``; none is stored.
        """
        for row in schedules:
            if row.catch_up not in _CATCH_UPS or row.source not in SCHEDULE_SOURCES:
                raise JournalError(f"journal {self.url}: schedule {row.name!r} refused: catch_up must be one of "
                                   f"{_CATCH_UPS} and source one of {SCHEDULE_SOURCES}", refused=True)
        with self.transaction():
            for row in schedules:
                old = self._s.schedules.get(row.name)
                if old is not None:
                    row = row._replace(added_at=old.added_at, last_fired=old.last_fired)
                self._s.schedules[row.name] = row

    def remove_schedules(self, names: Sequence[str]) -> int:
        """Delete the schedules `names`; returns how many there were."""
        with self.transaction():
            return sum(self._s.schedules.pop(name, None) is not None for name in dict.fromkeys(names))

    def schedules(self) -> list[ScheduleRow]:
        """Every stored schedule, by name."""
        with self._reading():
            return [self._s.schedules[name] for name in sorted(self._s.schedules)]

    def fire_schedule(self, name: str, previous: float | None, fired: float, jobs: Sequence[NewJob]) -> bool:
        """Compare-and-set `name`'s last_fired from `previous` to `fired` and enqueue `jobs` (see `Journal`)."""
        with self.transaction():
            row = self._s.schedules.get(name)
            if row is None or row.last_fired != previous:
                return False
            self._s.schedules[name] = row._replace(last_fired=fired)
            _limits.enqueue_firing(self.enqueue, name, jobs, logger)  # a full queue skips this firing
            return True

    # -- the scheduler's and the node's moves ---------------------------------------------------
    def renew(self, owners: Sequence[str], lease_for: float) -> int:
        """Extend the leases held by `owners` to now + `lease_for`; returns rows renewed."""
        wanted = set(owners)
        with self.transaction():
            rows = [j for j in self._s.jobs.values() if j.state == JobState.LEASED and j.lease_owner in wanted]
            for j in rows:
                j.lease_expires = self._clock() + lease_for
            return len(rows)

    def _due(self, now: float) -> list[_Job]:
        return [j for j in self._s.jobs.values()
                if j.state in (JobState.SCHEDULED, JobState.RETRY) and j.run_at <= now]

    def promote(self) -> int:
        """Move due scheduled and retry jobs to ready; returns the number moved."""
        with self.transaction():
            now = self._clock()
            due = self._due(now)
            for j in due:
                self._set(j, JobState.READY)
            return len(due) + self._admit_due_keys(now)

    def has_due(self) -> bool:
        """Whether a scheduled or retry job is due."""
        with self._reading():
            return bool(self._due(self._clock())) or self._keys_due(self._clock())

    def has_ready(self, queues: Sequence[str]) -> bool:
        """Whether a job of `queues` is ready (and its queue not paused)."""
        with self._reading():
            wanted = set(queues) - set(self._s.paused)
            return any(j.state == JobState.READY and j.queue in wanted for j in self._s.jobs.values())

    def cancel(self, job_id: str) -> bool:
        """Cancel a job in a live state (its lease, if any, becomes stale); False if final or unknown."""
        with self.transaction():
            job = self._s.jobs.get(job_id)
            if job is None or job.state not in _LIVE:
                return False
            self._move(job, JobState.CANCELLED)
            job.finished_at = self._clock()
            job.clear_lease()
            return True

    def retry_dead(self, job_id: str) -> bool:
        """Make a dead or failed job ready (blocked, with a flow key) with fresh attempts."""
        with self.transaction():
            job = self._s.jobs.get(job_id)
            if job is None or job.state not in (JobState.DEAD, JobState.FAILED):
                return False
            if job.unique_key is not None and any(p.unique_key == job.unique_key and p.state in _LIVE
                                                  for p in self._s.jobs.values()):
                # the unique index of live keys refuses it on SQLite and PostgreSQL alike
                raise JournalError(f"journal {self.url}: job {job_id!r} cannot come back: another live job "
                                   f"holds its unique key {job.unique_key!r}", refused=True)
            self._move(job, JobState.READY if job.flow_key is None else JobState.BLOCKED)
            job.attempts, job.run_at, job.finished_at = 0, self._clock(), None
            return True

    def cancelled(self, job_ids: Sequence[str]) -> list[str]:
        """Those of `job_ids` that are cancelled."""
        with self._reading():
            return [i for i in dict.fromkeys(job_ids)
                    if (j := self._s.jobs.get(i)) is not None and j.state == JobState.CANCELLED]

    def pause_queue(self, queue: str) -> bool:
        """Pause `queue`; True if it was running."""
        with self.transaction():
            if queue in self._s.paused:
                return False
            self._s.paused[queue] = self._clock()
            return True

    def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again; True if it was paused."""
        with self.transaction():
            return self._s.paused.pop(queue, None) is not None

    def paused_queues(self) -> list[str]:
        """The paused queues' names, sorted."""
        with self._reading():
            return sorted(self._s.paused)

    # -- reads ----------------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``, from the counts kept as jobs move (no pass over the jobs)."""
        result: dict[str, dict[str, int]] = {}
        with self._reading():
            for (queue, state), n in self._s.tally.items():
                if n:
                    result.setdefault(queue, {})[state] = n
        return result

    def _scan_counts(self) -> dict[str, dict[str, int]]:
        """`counts` read from every job (the tests' truth)."""
        result: dict[str, dict[str, int]] = {}
        with self._reading():
            for j in self._s.jobs.values():
                states = result.setdefault(j.queue, {})
                states[j.state.value] = states.get(j.state.value, 0) + 1
        return result

    def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds (see `Journal.queue_stats`)."""
        first, seconds = stats_slots(self._clock(), window)
        sums: dict[str, list[float]] = {}
        with self._reading():
            for (queue, slot), row in self._s.slots.items():
                if slot >= first:
                    total = sums.setdefault(queue, [0, 0, 0, 0.0, 0.0])
                    for i in range(4):
                        total[i] += row[i]
                    total[4] = max(total[4], row[4])
        return {q: QueueStats(seconds, int(t[0]), int(t[1]), int(t[2]), float(t[3]), float(t[4]))
                for q, t in sums.items()}

    def get(self, job_id: str) -> JobInfo | None:
        """The job with its errors' texts, oldest first, or None."""
        with self._reading():
            j = self._s.jobs.get(job_id)
            if j is None:
                return None
            return JobInfo(j.id, j.queue, j.task, j.state, j.attempts, j.max_attempts, j.run_at, j.lease_owner,
                           j.last_error, [e.error for e in j.errors])

    def result(self, job_id: str) -> JobResult | None:
        """The job's state and outcome; a result past its time reads as expired."""
        now = self._clock()
        with self._reading():
            j = self._s.jobs.get(job_id)
            if j is None:
                return None
            expired = j.result_expires is not None and j.result_expires <= now
            return JobResult(j.id, j.state, None if expired else j.result, expired, j.last_error, j.last_traceback)

    def expire_results(self, limit: int) -> int:
        """Remove up to `limit` results whose time has passed; returns how many."""
        if limit <= 0:
            return 0
        now = self._clock()
        with self.transaction():
            due = [j for j in self._s.jobs.values()
                   if j.result is not None and j.result_expires is not None and j.result_expires <= now][:limit]
            for j in due:
                j.result = None
            return len(due)

    def prune(self, older_than: Mapping[JobState, float], limit: int) -> int:
        """Delete up to `limit` finished jobs past their state's age, oldest first (see `Journal.prune`).

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
                due = sorted((j for j in self._s.jobs.values() if j.state == state and j.finished_at is not None
                              and j.finished_at < now - age and (j.unique_until is None or j.unique_until <= now)),
                             key=lambda j: j.finished_at)[:limit - removed]  # type: ignore[arg-type,return-value]
                for j in due:
                    self._delete(j)
                removed += len(due)
                if removed >= limit:
                    break
        return removed

    def list_jobs(self, *, state: JobState | None = None, queue: str | None = None, task: str | None = None,
                  after: str | None = None, limit: int = 50) -> list[JobSummary]:
        """Up to `limit` jobs after the cursor `after`, in id order (see `Journal.list_jobs`)."""
        wanted = check_listing(state, limit)
        cursor = after or ""
        with self._reading():
            rows = sorted((j for j in self._s.jobs.values() if j.id > cursor
                           and (wanted is None or j.state == wanted) and (queue is None or j.queue == queue)
                           and (task is None or j.task == task)), key=lambda j: j.id)[:limit]
            return [j.summary() for j in rows]

    def inspect(self, job_id: str) -> JobDetail | None:
        """Everything kept of one job; None if unknown."""
        with self._reading():
            j = self._s.jobs.get(job_id)
            if j is None:
                return None
            return JobDetail(j.id, j.queue, j.task, j.state, j.payload, j.priority, j.attempts, j.max_attempts,
                             j.run_at, j.created_at, j.finished_at, j.lease_id, j.lease_owner, j.lease_expires,
                             j.timeout, j.unique_key, j.unique_until, j.last_error, j.last_traceback, j.result,
                             j.result_expires, list(j.errors))

    def oldest_ready(self) -> dict[str, float]:
        """``{queue: created_at}`` of each queue's earliest ready job (by id)."""
        oldest: dict[str, _Job] = {}
        with self._reading():
            for j in self._s.jobs.values():
                if j.state == JobState.READY and (j.queue not in oldest or j.id < oldest[j.queue].id):
                    oldest[j.queue] = j
        return {q: j.created_at for q, j in oldest.items()}

    def clear_queue(self, queue: str, states: Sequence[JobState], limit: int) -> int:
        """Delete up to `limit` waiting jobs of `queue` in `states` (see `Journal.clear_queue`)."""
        wanted = check_clear(states, limit)
        removed = 0
        with self.transaction():
            for state in wanted:
                if removed >= limit:
                    break
                rows = sorted((j for j in self._s.jobs.values() if j.queue == queue and j.state == state),
                              key=lambda j: j.id)[:limit - removed]
                for j in rows:
                    self._delete(j)
                removed += len(rows)
        return removed

    def try_lead(self, name: str, holder: str, ttl: float) -> bool:
        """One node per store: the handle that attached it leads every duty."""
        return self.store.node is self

    def resign(self, name: str, holder: str) -> bool:
        """Nothing to give up: leadership follows the attached node."""
        return self.store.node is self

    def close(self) -> None:
        """Detach this handle's node, if any. Idempotent; the store stays for other handles."""
        with self.store.lock:
            if self.store.node is self:
                self.store.node = None
        self._closed = True

    # -- for tests ------------------------------------------------------------------------------
    def backdate_finish(self, job_ids: Sequence[str], seconds: float) -> None:
        """Move the finish time of `job_ids` `seconds` into the past (a test of retention)."""
        with self.transaction():
            for job_id in job_ids:
                job = self._s.jobs.get(job_id)
                if job is not None and job.finished_at is not None:
                    job.finished_at -= seconds

