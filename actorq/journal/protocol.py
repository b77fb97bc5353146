"""The `Journal` protocol: the durable queue as a small set of state transitions.

Job states and who moves a job between them::

    scheduled ──(due)──▶ ready ──lease──▶ leased ──complete──▶ succeeded
        ▲                  ▲                 │
        │                  ├──── release ────┤ (never started: attempt given back)
        │                  ├── fail(READY) ──┤ (owner died / lease expired: attempt counted)
        └── fail(RETRY) ◀──┼─────────────────┤ (attempts left: waits until retry_at)
                           │                 ├─▶ dead    fail(DEAD): attempts used up
                           │                 └─▶ failed  fail(FAILED): the task gave up for
                           │                              good, or crashed and is declared
                           │                              ``on_crash="fail"``
                           └──── retry_dead ◀── dead / failed
       cancelled ◀── cancel ── scheduled / ready / leased / retry

The journal stores outcomes; it does not decide them. Whether an attempt that
did not succeed is retried, tried again at once, or ends dead or failed is
decided above the journal (the job runtime's policy) and handed to `fail` as a
`Failure` with its state. To take back jobs whose owner died ("reclaim") or
whose lease expired, a caller reads the leases (`leased_by`,
`leased_with_prefix`, `expired`; `attempts` for named leases), decides, and
calls `fail`, all in one transaction::

    with journal.transaction():
        rows = journal.leased_by(owner, keep=still_held)
        journal.fail([Failure(r.job_id, r.lease_id, "worker died", decide(r)) for r in rows])

Fencing: every lease has a lease id. `complete`, `fail` and `release` name the
lease they answer; once the job left that lease (taken back, cancelled, leased
again) the answer is rejected and not counted in the return value.

Cron schedules are rows beside the jobs (`ScheduleRow`): a definition and
``last_fired``, the latest fire time handled. `fire_schedule` moves it with a
compare-and-set on the value read and enqueues the fire times' jobs in the same
transaction, so a fire time fires once whoever else tries (see docs/schedules.md).

Finished jobs are kept, then deleted by age and final state (`Journal.prune`): the node's
upkeep calls it in small batches by each state's retention (docs/retention.md).

Every method is one batched transition. A backend is used from one thread at
a time. Methods called inside ``with journal.transaction():`` share one atomic,
durable commit (group commit); called outside, each commits on its own.
Nothing here knows about actors, processes or sockets.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Collection, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from actorq.errors import QueueFull

__all__ = [
    "Attempt",
    "FAILURE_STATES",
    "Failure",
    "JobInfo",
    "JobState",
    "JobResult",
    "Journal",
    "KeptResult",
    "LATEST_RUN_AT",
    "LIVE_STATES",
    "ADMITTED_STATES",
    "LeasedJob",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY_LIMIT",
    "MAX_FLOW_KEY",
    "MAX_PRIORITY",
    "MAX_UNIQUE_FOR",
    "MIN_PRIORITY",
    "NewJob",
    "SCHEDULE_SOURCES",
    "ScheduleRow",
    "TERMINAL_STATES",
    "TaskDefaults",
    "check_failures",
    "check_prune",
]


DEFAULT_MAX_ATTEMPTS = 20  # attempts (runs and crashes) a job gets when nobody says otherwise
# A job's numbers fit both journals' columns: priority and max_attempts are PostgreSQL int4 (SQLite's
# INTEGER is wider), run_at a time both store and read back. Every producer's job passes through
# `NewJob`, which checks them; the command line bounds its flags with the same constants.
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1
MAX_ATTEMPTS = 2**31 - 1
LATEST_RUN_AT = 253_402_300_799.0  # 9999-12-31 23:59:59 UTC, in Unix seconds


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JobState(StrEnum):
    """The states of a job. Stored as these exact strings."""

    SCHEDULED = "scheduled"
    """Waits for its ``run_at``. In: enqueue with a future time. Out: the scheduler's
    promotion (to ready) or cancel. A crash leaves it untouched."""
    READY = "ready"
    """Due and waiting for a worker. In: enqueue, promotion, release, a reclaim (`fail`
    with this state after the owner died or the lease expired). Out: lease by a
    dispatcher, or cancel."""
    LEASED = "leased"
    """Handed to a worker under a lease (owner, lease id, expiry); the attempt is counted
    when the lease is taken. Out: complete, fail (also to reclaim it when the owner dies
    or the lease expires), release, or cancel (the lease is then stale). A crash of the
    owner leaves it leased until reclaimed."""
    RETRY = "retry"
    """The last attempt raised and attempts are left; waits for its backoff (``run_at``).
    Out: promotion to ready, or cancel."""
    SUCCEEDED = "succeeded"
    """Final. The task returned and the ack was journaled."""
    FAILED = "failed"
    """Final. The task gave up for good (raised `actorq.Discard`), raised an error that is not
    retried (an `actorq.PermanentError`, or one its ``retry_on`` / ``dont_retry_on`` rule out),
    or its owner crashed and the task is declared ``on_crash="fail"``; can be retried by hand."""
    DEAD = "dead"
    """Final. Attempts used up (exceptions and crashes alike) or the task is unknown; kept
    with its errors for inspection and can be retried by hand."""
    CANCELLED = "cancelled"
    """Final. Cancelled by request from any non-final state; if it was leased, the
    worker's later ack, failure or renewal is rejected as stale."""
    BLOCKED = "blocked"
    """Waits for a slot of its flow key (an ordering key, or a concurrency key at its limit).
    In: enqueue, or a retry by hand, of a job with a key. Out: admission, to ready (or
    scheduled, before its ``run_at``), when a job of its key finishes; or cancel. The
    journal admits it in the same transaction that ends the job before it
    (docs/flow-control-keys.md)."""


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})
LIVE_STATES = (JobState.BLOCKED, JobState.SCHEDULED, JobState.READY, JobState.LEASED, JobState.RETRY)
"""The non-final states, in the order a job goes through them: a live job can be cancelled
and holds its unique key."""
ADMITTED_STATES = LIVE_STATES[1:]
"""The live states that hold a slot of the job's flow key (all but blocked)."""


MAX_TIMEOUT = 366 * 86400
"""The longest time limit a job or task may set, in seconds (a year; never inf or NaN)."""

MAX_UNIQUE_FOR = 366 * 86400
"""The longest period a job's unique key may be held for after its insert, in seconds (a year)."""

MAX_CONCURRENCY_LIMIT = 1_000_000
"""The largest number of jobs of one concurrency key a job may let run at once."""

MAX_FLOW_KEY = 512
"""The longest ordering or concurrency key, in characters."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert.

    Attributes:
        id: client-made, time-ordered id (`actorq.ids.new_id`); re-sending it is a no-op.
        queue: queue name.
        task: registered task name.
        payload: msgpack of ``[args, kwargs]``.
        priority: lower runs first among ready jobs of a queue; an integer from
            `MIN_PRIORITY` to `MAX_PRIORITY`.
        run_at: Unix time before which it must not run; ``None`` means now. Finite,
            at most `LATEST_RUN_AT`.
        max_attempts: attempts (runs and crashes) before it goes dead; an integer up to
            `MAX_ATTEMPTS` (one below 1 is refused by the journal's schema, with its batch).
        unique_key: at most one live job (scheduled, ready, leased or retry) holds a
            key, and a job inside its `unique_for` period holds it in any state; a job
            whose key is held is not inserted (see `Journal.holders`).
        timeout: seconds an attempt may run, overriding its task's declared timeout;
            None: the task's. Finite, > 0, at most `MAX_TIMEOUT`.
        unique_for: seconds from its insert, by the journal's clock, during which the
            job holds `unique_key` whatever its state, finished included (stored as the
            row's ``unique_until``); None: only while it is live. Needs `unique_key`.
            Finite, at most `MAX_UNIQUE_FOR`; 0 or less makes a period that is over at
            once (as `KeptResult.keep_for`; the producer surfaces refuse it).
        ordering_key: jobs with one ordering key run one at a time, in id (enqueue) order:
            the job is admitted (leaves blocked) only when every earlier job of its key
            has finished (docs/flow-control-keys.md).
        concurrency_key: at most `concurrency_limit` jobs with this key are admitted
            (scheduled, ready, leased or retry) at once, across every worker and node;
            the others wait blocked, in id order. A job has at most one of the two keys.
        concurrency_limit: the key's limit, an integer from 1 to `MAX_CONCURRENCY_LIMIT`;
            None with a key: 1. Jobs of one key should agree on it: a slot that frees
            admits up to the limit of the key's earliest blocked job.
        discard_over_limit: the enqueue adds nothing when `concurrency_limit` jobs of its
            key are already admitted (``on_conflict="discard"``); False: it is added and waits.

    Raises:
        ValueError: a number the journal's columns cannot hold (G12): it is refused
            here, where the job is made, never inside a batch of other jobs.
    """

    id: str
    queue: str
    task: str
    payload: bytes
    priority: int = 0
    run_at: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    unique_key: str | None = None
    timeout: float | None = None
    unique_for: float | None = None
    ordering_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    discard_over_limit: bool = False

    def __post_init__(self) -> None:
        if not (_is_int(self.priority) and MIN_PRIORITY <= self.priority <= MAX_PRIORITY):
            raise ValueError(f"job {self.id!r}: priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
                             f"got {self.priority!r}")
        if not (_is_int(self.max_attempts) and self.max_attempts <= MAX_ATTEMPTS):
            raise ValueError(f"job {self.id!r}: max_attempts must be an integer from 1 to {MAX_ATTEMPTS}, "
                             f"got {self.max_attempts!r}")
        if self.run_at is not None and not (isinstance(self.run_at, (int, float)) and not isinstance(self.run_at, bool)
                                            and -LATEST_RUN_AT <= self.run_at <= LATEST_RUN_AT):
            raise ValueError(f"job {self.id!r}: run_at must be a finite Unix time up to {LATEST_RUN_AT:.0f} "
                             f"(year 9999), got {self.run_at!r}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float))
                                             and not isinstance(self.timeout, bool)
                                             and 0 < self.timeout <= MAX_TIMEOUT):
            raise ValueError(f"job {self.id!r}: timeout must be a number of seconds > 0 and at most "
                             f"{MAX_TIMEOUT:,}, got {self.timeout!r}")
        if self.timeout is not None:  # one type in the journal's columns and arrays
            object.__setattr__(self, "timeout", float(self.timeout))
        if self.unique_for is not None:
            if not (_is_number(self.unique_for) and -MAX_UNIQUE_FOR <= self.unique_for <= MAX_UNIQUE_FOR):
                raise ValueError(f"job {self.id!r}: unique_for must be a number of seconds up to "
                                 f"{MAX_UNIQUE_FOR:,}, got {self.unique_for!r}")
            if self.unique_key is None:
                raise ValueError(f"job {self.id!r}: unique_for needs a unique_key")
            object.__setattr__(self, "unique_for", float(self.unique_for))
        if self.concurrency_limit is not None:
            if not (_is_int(self.concurrency_limit) and 1 <= self.concurrency_limit <= MAX_CONCURRENCY_LIMIT):
                raise ValueError(f"job {self.id!r}: concurrency_limit must be an integer from 1 to "
                                 f"{MAX_CONCURRENCY_LIMIT}, got {self.concurrency_limit!r}")
            if self.concurrency_key is None:
                raise ValueError(f"job {self.id!r}: concurrency_limit needs a concurrency_key")
        elif self.concurrency_key is not None:
            object.__setattr__(self, "concurrency_limit", 1)
        if self.discard_over_limit and self.concurrency_key is None:
            raise ValueError(f"job {self.id!r}: discard_over_limit needs a concurrency_key")
        if self.ordering_key is not None and self.concurrency_key is not None:
            raise ValueError(f"job {self.id!r}: a job takes one flow key, ordering_key or concurrency_key, not both")
        for name in ("ordering_key", "concurrency_key"):
            key = getattr(self, name)
            if key is not None and not (isinstance(key, str) and 0 < len(key) <= MAX_FLOW_KEY):
                raise ValueError(f"job {self.id!r}: {name} must be a text of 1 to {MAX_FLOW_KEY} characters")

    @property
    def flow_key(self) -> str | None:
        """The key the journal admits by: ``o:`` + the ordering key or ``c:`` + the
        concurrency key (two name spaces), or None."""
        if self.ordering_key is not None:
            return "o:" + self.ordering_key
        return None if self.concurrency_key is None else "c:" + self.concurrency_key

    @property
    def flow_limit(self) -> int | None:
        """How many jobs of `flow_key` are admitted at once: 1 for an ordering key."""
        if self.ordering_key is not None:
            return 1
        return self.concurrency_limit


class QueueLimits(NamedTuple):
    """A queue's flow-control settings (``[queues.NAME]`` in topology.toml); None: no limit.

    `concurrency` (jobs of the queue leased at once, every node together) and
    `max_depth` (waiting jobs: ready, scheduled and retry) are stored in the journal
    (`Journal.declare_queues`) and enforced by every node and client; `node_concurrency`
    (leased at once by this node's workers) is the declaring node's own.

    `rate` (``"100/m"``: jobs leased per second, minute or hour, every node together) and
    `burst` (the most tokens the queue's bucket holds; None: the rate's count, at least 1)
    are a token bucket stored in the journal, refilled by the journal's clock and taken
    from inside each lease (docs/rate-limits-and-breakers.md).
    """

    queue: str
    concurrency: int | None = None
    node_concurrency: int | None = None
    max_depth: int | None = None
    rate: str | None = None
    burst: int | None = None


MAX_QUEUE_LIMIT = 1_000_000_000  # the largest concurrency or max_depth a queue may set
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}  # the units of a rate ("100/m"), in seconds
QUEUE_LIMITS_TTL = 5.0  # seconds a journal keeps the stored queue limits before reading them again
KEYS_PER_TICK = 500  # keys whose rules let them through again (a token due, a cool-down over) admitted per `promote`
KEY_ROWS_PRUNED_PER_TICK = 1000  # idle per-key rule rows (full bucket, closed breaker) deleted per `promote`


class LeasedJob(NamedTuple):
    """A job handed out by `Journal.lease`; `attempt` is the number of this run (1-based)."""

    id: str
    queue: str
    task: str
    payload: bytes
    attempt: int
    max_attempts: int
    lease_id: int
    timeout: float | None = None
    """The job's own time limit in seconds (None: its task's)."""


class Failure(NamedTuple):
    """The decided outcome of an attempt that did not succeed (it raised, or its owner died).

    Attributes:
        job_id, lease_id: the lease being answered (stale leases are rejected).
        error: "ExceptionType: message" or why the attempt was lost ("worker died"),
            stored as text, never as an object.
        state: where the job goes, one of `FAILURE_STATES`: ``RETRY`` (wait until
            `retry_at`), ``READY`` (again at once, e.g. after a crash), ``DEAD``
            (attempts used up, or it can never run) or ``FAILED`` (given up for good).
        retry_at: Unix time of the next attempt; required for ``RETRY``, ignored otherwise.
        traceback: the traceback text of an attempt that raised (stored as the job's last
            traceback, beside its last error); None for any other end.
    """

    job_id: str
    lease_id: int
    error: str
    state: JobState
    retry_at: float | None = None
    traceback: str | None = None


FAILURE_STATES = (JobState.READY, JobState.RETRY, JobState.DEAD, JobState.FAILED)
"""The states `Journal.fail` stores."""


def check_failures(failures: Sequence[Failure]) -> None:
    """Check that every failure names a state `Journal.fail` stores, with what that state needs.

    Args:
        failures: the batch, checked whole before any of it is stored.

    Raises:
        ValueError: a state not in `FAILURE_STATES`, or ``RETRY`` without ``retry_at``.
    """
    for f in failures:
        if f.state not in FAILURE_STATES:
            raise ValueError(f"job {f.job_id!r}: a failure's state must be one of "
                             f"{[s.value for s in FAILURE_STATES]}, got {f.state!r}")
        if f.state == JobState.RETRY and f.retry_at is None:
            raise ValueError(f"job {f.job_id!r}: a failure in state 'retry' needs retry_at")


MAX_RETAIN = 10 * 365 * 86400.0
"""The longest a finished job may be kept before pruning, in seconds (ten years); longer is
"forever" (no pruning of that state)."""


def check_prune(older_than: Mapping[JobState, float], limit: int) -> list[tuple[JobState, float]]:
    """Check the arguments of `Journal.prune`; returns the ``(state, seconds)`` pairs in state order.

    Args:
        older_than: ``{final state: seconds}``; each a finite number from ``-MAX_RETAIN`` to
            `MAX_RETAIN` (negative: jobs finished up to that far in the future too, as a test
            takes "everything finished so far").
        limit: the most jobs one call removes, an integer >= 0.

    Raises:
        ValueError: a state that is not final, a number out of range, or a bad limit.
    """
    if not (_is_int(limit) and limit >= 0):
        raise ValueError(f"prune: limit must be an integer >= 0, got {limit!r}")
    pairs: list[tuple[JobState, float]] = []
    for state, seconds in older_than.items():
        if state not in TERMINAL_STATES:
            raise ValueError(f"prune: only finished jobs are pruned; {state!r} is not one of "
                             f"{sorted(s.value for s in TERMINAL_STATES)}")
        if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                and -MAX_RETAIN <= seconds <= MAX_RETAIN):
            raise ValueError(f"prune: the age of {JobState(state).value!r} jobs must be seconds from "
                             f"{-MAX_RETAIN:.0f} to {MAX_RETAIN:.0f}, got {seconds!r}")
        pairs.append((JobState(state), float(seconds)))
    return sorted(pairs)


class Attempt(NamedTuple):
    """A current lease, as read by `Journal.attempts`, `leased_by`, `leased_with_prefix` and `expired`.

    Attributes:
        job_id, lease_id: the lease (answer it with `Journal.fail` to take the job back).
        task: the job's task name.
        attempt: the number of this attempt (1-based); the lease already counted it.
        max_attempts: the job's attempts in all.
    """

    job_id: str
    lease_id: int
    task: str
    attempt: int
    max_attempts: int


MAX_BREAKER_SECONDS = 86_400.0  # the longest window or cool-down a circuit breaker may set (a day)
MAX_BREAKER_FAILURES = 10_000  # the most failures a breaker's window may count before it opens


@dataclass(frozen=True)
class CircuitBreaker:
    """A task's circuit breaker: stop leasing its jobs for a while when its attempts keep failing.

    ``closed`` (jobs leased as usual) -> ``open`` after `failures` failed attempts within
    `window` seconds, every node's together -> ``half_open`` `cool_down` seconds later, when
    at most `probes` of its jobs are leased at once -> ``closed`` when a probe succeeds, or
    ``open`` again when one fails. While open, its jobs stay ready (they are not failed).
    The state is kept in the journal (docs/rate-limits-and-breakers.md).

    Raises:
        ValueError: `failures` or `probes` not an integer from 1 to `MAX_BREAKER_FAILURES`,
            `window` or `cool_down` not a number of seconds > 0 up to `MAX_BREAKER_SECONDS`.
    """

    failures: int = 5
    window: float = 60.0
    cool_down: float = 30.0
    probes: int = 1

    def __post_init__(self) -> None:
        for name in ("failures", "probes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_BREAKER_FAILURES):
                raise ValueError(f"circuit breaker: {name} must be an integer from 1 to {MAX_BREAKER_FAILURES:,}, "
                                 f"got {value!r}")
        for name in ("window", "cool_down"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 < value <= MAX_BREAKER_SECONDS):
                raise ValueError(f"circuit breaker: {name} must be a number of seconds > 0 and at most "
                                 f"{MAX_BREAKER_SECONDS:,.0f}, got {value!r}")
            object.__setattr__(self, name, float(value))


class BreakerState(NamedTuple):
    """Where a task's circuit breaker stands (`Journal.breakers`).

    Attributes:
        task: the task's name.
        state: ``closed``, ``open`` or ``half_open``.
        failures: failed attempts within the window (closed), as last written.
        opened_at: Unix time (the journal's clock) it last opened; None if it never did.
        reopens_at: when an open breaker lets probes through (None unless open).
    """

    task: str
    state: str
    failures: int
    opened_at: float | None
    reopens_at: float | None
    key: str | None = None
    """The job key of a per-key breaker (``key_circuit_breaker``), as the jobs carry it; None: the task's own."""


class TaskDefaults(NamedTuple):
    """A task's declared defaults, as a node's registry declares them (`Journal.declare_tasks`).

    A producer that does not import the task registry reads them (`Journal.declared_tasks`)
    to give a new job its task's queue, priority and max_attempts.
    """

    name: str
    queue: str
    priority: int
    max_attempts: int
    unique_for: float | None = None
    """Seconds a job of the task holds its unique key after its insert (see `NewJob.unique_for`);
    a job with no key of its own gets one made of the task name and its arguments."""
    concurrency_limit: int | None = None
    """How many jobs of one concurrency key run at once, for the task's jobs with a key and no
    limit of their own (None: 1; see `NewJob.concurrency_limit`)."""
    on_conflict: str | None = None
    """``"discard"``: the task's jobs with a concurrency key are not added once the key has its
    limit of admitted jobs (`NewJob.discard_over_limit`); ``"block"`` or None: they wait."""
    concurrency: int | None = None
    """Jobs of the task leased at once, every node together (None: no limit of its own)."""
    rate: str | None = None
    """Jobs of the task leased per second, minute or hour (``"10/s"``), every node together."""
    burst: int | None = None
    """The most tokens the task's bucket holds (None: the rate's count)."""
    circuit_breaker: CircuitBreaker | None = None
    """Its circuit breaker (None: none)."""
    key_rate: str | None = None
    """Jobs admitted per second, minute or hour **for each flow key** of the task's jobs (``"10/m"``)."""
    key_burst: int | None = None
    """The most tokens each key's bucket holds (None: the key rate's count)."""
    key_circuit_breaker: CircuitBreaker | None = None
    """A circuit breaker for each flow key of the task's jobs: an open one keeps the key's jobs blocked."""


class KeptResult(NamedTuple):
    """A succeeded job's return value, to store with its completion (`Journal.complete`).

    Attributes:
        data: msgpack of the value (never empty; a task that returned None stores nothing).
        keep_for: seconds, from the commit by the journal's clock, that it is kept (0 or less:
            it reads as expired at once).
    """

    data: bytes
    keep_for: float


class JobResult(NamedTuple):
    """What a waiter reads of a job (`Journal.result`).

    Attributes:
        id: the job.
        state: its state; only a final state (`TERMINAL_STATES`) has an outcome.
        result: msgpack of the return value of a succeeded job; None when it returned None,
            kept nothing, or the result expired.
        expired: the result was kept and its time has passed (it reads as None from then on,
            even before the sweep removes it).
        error: the last error text (``"Type: message"``), of a job that did not succeed.
        traceback: the traceback text of its last attempt that raised, if any.
    """

    id: str
    state: JobState
    result: bytes | None
    expired: bool
    error: str | None
    traceback: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "JobResult":
        """From the backends' result row: id, state, result, expired (0/1), error, traceback."""
        return cls(row[0], JobState(row[1]), row[2], bool(row[3]), row[4], row[5])


class JobInfo(NamedTuple):
    """A read-only view of one job row."""

    id: str
    queue: str
    task: str
    state: JobState
    attempts: int
    max_attempts: int
    run_at: float
    lease_owner: str | None
    last_error: str | None
    errors: list[str]


MAX_LIST_LIMIT = 10_000
"""The most jobs one `Journal.list_jobs` call returns (a page)."""

WAITING_STATES = (JobState.BLOCKED, JobState.SCHEDULED, JobState.READY, JobState.RETRY)
"""The states `Journal.clear_queue` deletes from: jobs no worker holds (a leased job is left to
its worker; cancel it instead)."""


STATS_SLOT = 10  # seconds per slot of the journal's per-queue figures (`Journal.queue_stats`)
STATS_KEEP = 3600  # seconds of slots kept; `maintain` drops the older ones
MIN_STATS_WINDOW, MAX_STATS_WINDOW = STATS_SLOT, STATS_KEEP


class QueueStats(NamedTuple):
    """What one queue did over a recent window (`Journal.queue_stats`), from the journal's slots.

    Attributes:
        seconds: the time the figures cover: from the start of the window's first slot to
            now, so the asked window plus up to one slot (`STATS_SLOT` s).
        finished: jobs that reached a final state (succeeded, failed, dead, cancelled).
        failed: of those, the failed and dead ones.
        leased: leases taken (a job leased again after a crash counts again).
        wait_sum: seconds the leased jobs waited, summed: each from its ``run_at`` (its enqueue,
            its due time, its retry time) to its lease. A job released or reclaimed back to
            ready keeps its ``run_at``: its next lease counts the earlier attempt's time too.
        wait_max: the longest of those waits.
    """

    seconds: float
    finished: int
    failed: int
    leased: int
    wait_sum: float
    wait_max: float

    @property
    def rate(self) -> float:
        """Finished jobs per second over `seconds`."""
        return self.finished / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_mean(self) -> float | None:
        """The mean queue wait of the window's leases, in seconds; None without leases."""
        return self.wait_sum / self.leased if self.leased else None


def stats_slots(now: float, window: float) -> tuple[int, float]:
    """The first slot of a `window` of seconds ending at `now`, and the seconds from its start.

    Raises:
        ValueError: `window` is not a number from `MIN_STATS_WINDOW` to `MAX_STATS_WINDOW`.
    """
    if isinstance(window, bool) or not isinstance(window, (int, float)) \
            or not MIN_STATS_WINDOW <= window <= MAX_STATS_WINDOW:
        raise ValueError(f"window must be seconds from {MIN_STATS_WINDOW} to {MAX_STATS_WINDOW}, got {window!r}")
    first = int((now - window) // STATS_SLOT)
    return first, now - first * STATS_SLOT


def stats_slot(at: float) -> int:
    """The slot of the time `at` (Unix seconds)."""
    return int(at // STATS_SLOT)


class JobSummary(NamedTuple):
    """One row of a listing (`Journal.list_jobs`): a job without its payload, result or traceback.

    Times are Unix seconds by the journal's clock; `finished_at` is None until a final state,
    `lease_owner` None unless leased, `last_error` the latest attempt's error text, if any.
    """

    id: str
    queue: str
    task: str
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    finished_at: float | None
    lease_owner: str | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "JobSummary":
        """From the backends' listing row, in the order of the fields above."""
        return cls(row[0], row[1], row[2], JobState(row[3]), *row[4:])


class ErrorRecord(NamedTuple):
    """One attempt's error, as the journal kept it: its number, Unix time and text
    (``"Type: message"``; the traceback of the latest one is `JobDetail.last_traceback`)."""

    attempt: int
    at: float
    error: str


class JobDetail(NamedTuple):
    """Everything the journal keeps of one job (`Journal.inspect`).

    Attributes:
        payload: msgpack of ``[args, kwargs]``, as enqueued (undecoded: the reader decides how).
        lease_id, lease_owner, lease_expires: the current lease (None unless leased;
            `lease_expires` may be ``inf`` on PostgreSQL for a lease that never expires).
        timeout: the job's own time limit in seconds, or None (its task's).
        unique_key, unique_until: its unique key and the end of its unique period, if any.
        last_error, last_traceback: the latest failed attempt's error and traceback text.
        result: msgpack of a succeeded job's kept return value (None: none kept, or removed).
        result_expires: Unix time the result expires, or None.
        errors: every recorded attempt's error, oldest first (attempt numbers restart after
            a retry by hand).
    """

    id: str
    queue: str
    task: str
    state: JobState
    payload: bytes
    priority: int
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    finished_at: float | None
    lease_id: int | None
    lease_owner: str | None
    lease_expires: float | None
    timeout: float | None
    unique_key: str | None
    unique_until: float | None
    last_error: str | None
    last_traceback: str | None
    result: bytes | None
    result_expires: float | None
    errors: list[ErrorRecord]


def check_listing(state: JobState | str | None, limit: int) -> JobState | None:
    """Check `Journal.list_jobs`'s arguments; return the state as a `JobState` (or None).

    Raises:
        ValueError: an unknown state, or a limit outside 1..`MAX_LIST_LIMIT`.
    """
    if not (_is_int(limit) and 1 <= limit <= MAX_LIST_LIMIT):
        raise ValueError(f"list_jobs: limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
    if state is None:
        return None
    try:
        return JobState(state)
    except ValueError:
        raise ValueError(f"list_jobs: unknown state {state!r}; one of {', '.join(s.value for s in JobState)}") from None


def check_clear(states: Sequence[JobState], limit: int) -> list[JobState]:
    """Check `Journal.clear_queue`'s arguments; return the states in `WAITING_STATES` order.

    Raises:
        ValueError: a state outside `WAITING_STATES`, or a limit that is not an integer >= 0.
    """
    if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0):
        raise ValueError(f"clear_queue: limit must be an integer >= 0, got {limit!r}")
    wanted = set()
    for state in states:
        if state not in [s.value for s in WAITING_STATES]:
            raise ValueError(f"clear_queue: only waiting jobs are cleared; {state!r} is not one of "
                             f"{', '.join(s.value for s in WAITING_STATES)}")
        wanted.add(JobState(state))
    return [s for s in WAITING_STATES if s in wanted]


def merge_pages(pages: Sequence[Sequence[JobSummary]], limit: int) -> list[JobSummary]:
    """The first `limit` jobs by id of `pages`, each already in id order (one per state and queue)."""
    return sorted((job for page in pages for job in page), key=lambda job: job.id)[:limit]


SCHEDULE_SOURCES = ("file", "api")
"""Where a schedule was defined: a node's ``topology.toml`` (replaced at each node start)
or the API (kept until removed)."""


class ScheduleRow(NamedTuple):
    """A cron schedule as the journal stores it (`Journal.put_schedules`, `Journal.schedules`).

    The journal checks nothing of the definition (the cron expression, the timezone):
    `actorq.jobs.schedule.Schedule` does, where a schedule is made.

    Attributes:
        name: the schedule's unique name.
        cron: the cron expression.
        task: the registered task name its jobs run.
        payload: msgpack of ``[args, kwargs]`` for each job.
        queue: the queue of its jobs; None: the task's declared queue.
        timezone: the IANA zone the expression is read in (``"UTC"``, ``"Europe/Berlin"``).
        catch_up: ``"none"``, ``"last"`` or ``"all"`` (see docs/schedules.md).
        source: one of `SCHEDULE_SOURCES`.
        added_at: Unix time the schedule was first stored; its first fire time is after it.
        last_fired: Unix time of the latest fire time handled (fired or skipped); None: none yet.
    """

    name: str
    cron: str
    task: str
    payload: bytes
    queue: str | None
    timezone: str
    catch_up: str
    source: str
    added_at: float
    last_fired: float | None = None


@runtime_checkable
class Journal(Protocol):
    """A durable job queue backend. See the module docstring for the state machine.

    What a backend can do is declared on its class (`shared`, `notifies`), so code above
    the journal asks the backend, never which backend it is.
    """

    url: str
    shared: ClassVar[bool]
    """Several nodes may run on one journal (PostgreSQL); if False, one node per journal
    (SQLite: `attach_node` takes a lock, and that node leads every once-only duty)."""
    notifies: ClassVar[bool]
    """The backend has a LISTEN/NOTIFY `Listener` that wakes dispatchers when jobs become
    ready elsewhere (PostgreSQL); if False, polling is the only way to see them."""

    @property
    def outage(self) -> str | None:
        """While the journal cannot be reached (an outage under way): what is unreachable; else None.

        Safe to read from any thread. A backend that cannot lose its journal (a local file)
        always returns None.
        """

    def maintain(self) -> str | None:
        """Do the backend's own upkeep, if it needs any now; call it now and then.

        Runs on the journal's own thread, OUTSIDE any transaction, and may block (SQLite:
        up to ``busy_timeout`` while a checkpoint waits for readers).

        Returns:
            A one-line summary of what was done, for the log (e.g. ``"WAL was 70.1 MB:
            checkpointed, restarted"``), or None when nothing was needed.

        Raises:
            JournalError: called inside a transaction, or the upkeep failed (try again later).
        """

    def transaction(self) -> AbstractContextManager[None]:
        """Run the transitions inside the block as one atomic, durable commit."""

    def attach_node(self) -> None:
        """Declare that a node runs on this journal; a backend that allows one node refuses a second.

        Raises:
            JournalLocked: another node holds the journal.
        """

    def enqueue(self, jobs: Sequence[NewJob], *, refused: list[tuple[NewJob, QueueFull]] | None = None) -> int:
        """Insert `jobs` as ready (or scheduled when `run_at` is in the future).

        Ids already present are skipped (idempotent re-send), and so are jobs whose
        unique key is held: by a live job, or by any job whose ``unique_for`` period (from
        its insert, by the journal's clock) has not ended. Returns the number inserted.

        A queue with a ``max_depth`` (`declare_queues`) takes, in the same transaction, at
        most ``max_depth`` minus its waiting jobs (ready, scheduled, retry); on PostgreSQL its
        enqueuers are serialized on its settings row. With `refused` given, the jobs past
        the room (in batch order) are appended to it and the rest inserted; without, the
        whole batch is refused. Queues without a ``max_depth`` cost nothing more.

        Raises:
            QueueFull: a job would take its queue past ``max_depth`` (`refused` not given).
        """

    def holders(self, keys: Sequence[str]) -> dict[str, str]:
        """``{unique key: id of the job holding it}`` for those of `keys` that are held: by a
        live job, or by a job (in any state) still inside its ``unique_for`` period."""

    def lease(self, queues: Sequence[str], owner: str, limit: int, lease_for: float) -> list[LeasedJob]:
        """Move up to `limit` ready jobs of `queues` to leased, owned by `owner` for `lease_for` s.

        Counts one attempt per job. Lower priority first, then oldest id.

        A queue with a ``concurrency`` (stored, `declare_queues`) or a ``node_concurrency``
        (declared by this journal's node) gives at most its limit minus the jobs of it leased
        now (by every owner, or by the owners under this node's prefix), counted inside the
        lease's transaction: on PostgreSQL the claimers of a limited queue are serialized
        on its settings row. Limited queues are leased first, then the rest in one statement.

        A queue with a ``rate`` gives at most the whole tokens of its bucket, refilled by the
        journal's clock, and spends what it took; a task declared with rules (`task_rules`)
        whose declared queue is among `queues` is leased by a statement of its own within its
        room (its concurrency, its tokens, its circuit breaker), the others by one statement
        that leaves its jobs out. Jobs left ready by a rule are not failed. After the lease,
        ``rate_wait`` holds the seconds until the soonest token (or end of a breaker's
        cool-down) that would let more through, or None.
        """

    def declare_queues(self, limits: Sequence[QueueLimits], node_prefix: str = "") -> None:
        """Store `limits` (the file wins: each replaces the stored row of its queue) and keep
        their ``node_concurrency`` for this journal's leases by owners starting with `node_prefix`."""

    def queue_limits(self) -> dict[str, QueueLimits]:
        """``{queue: stored limits}`` of every queue some node declared (`node_concurrency` is None)."""

    def task_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its declaration}`` of every task declared with a concurrency, a rate or a
        circuit breaker (`declare_tasks`): the tasks whose jobs a lease takes by their own
        statements, within their room (docs/rate-limits-and-breakers.md)."""

    def breakers(self) -> list[BreakerState]:
        """Where each declared circuit breaker stands, by task name.

        A breaker's state moves in the transactions that store its task's attempts' ends
        (`fail` counts a failed attempt; `complete` of a half-open task's job closes it) and
        in a lease (open -> half-open once its cool-down is over)."""

    def key_breakers(self, limit: int) -> tuple[list[BreakerState], dict[str, int]]:
        """The per-key circuit breakers (``key_circuit_breaker``) that are not closed: at most
        `limit` of them (open first, then by task and key), and how many there are in all by
        state (``{"open": n, "half_open": m}``, states with none left out).

        A key's breaker moves in the transactions that store its jobs' attempts' ends, and
        when the key's jobs are admitted (open -> half-open once its cool-down is over)."""

    def complete(self, acks: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None,
                 results: Mapping[str, KeptResult] | None = None) -> int:
        """Move ``(job_id, lease_id)`` pairs from leased to succeeded.

        `results` holds, by job id, the return values to store with the completions (in
        the same statement as the state change, so a stale ack never writes one); an
        accepted job with none stores no result.

        A pair whose lease is no longer current is rejected (fencing). A journal shared by
        several nodes never waits for a row another transaction holds locked (another node
        settling or rescuing that job): it skips the pair and appends it to `busy`, for the
        caller to try again once that transaction has ended (the pair is then either applied
        or stale). Returns the number accepted; the rest were stale or busy.
        """

    def fail(self, failures: Sequence[Failure]) -> int:
        """Store the decided outcome of attempts that did not succeed; the journal decides nothing.

        For each failure whose lease is current: ``state`` as given; ``RETRY`` sets
        ``run_at`` to ``retry_at``; ``READY`` keeps ``run_at`` (the job goes back at once);
        ``DEAD`` and ``FAILED`` are final (finished now). Every one records ``error`` as
        the job's last error and as one row of its errors (attempt = the job's attempts),
        and clears the lease.

        Returns:
            The number accepted; stale leases are rejected and not counted.

        Raises:
            ValueError: a state other than ready, retry, dead or failed, or ``RETRY``
                without ``retry_at`` (see `check_failures`); nothing of the batch is stored.
        """

    def release(self, leases: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None) -> int:
        """Return leased jobs that never started to ready, giving their attempt back.

        Pairs whose row another transaction holds go to `busy`, as in `complete`.
        """

    def attempts(self, leases: Sequence[tuple[str, int]], *,
                 busy: list[tuple[str, int]] | None = None) -> list[Attempt]:
        """The ``(job_id, lease_id)`` pairs of `leases` whose lease is current, in no particular order.

        Read inside the caller's transaction, the rows stay locked for its `fail` (PostgreSQL:
        ``FOR UPDATE``). Pairs whose row another transaction holds go to `busy`, as in `complete`.
        """

    def leased_by(self, owner: str, *, keep: Collection[int] = ()) -> list[Attempt]:
        """Every current lease of `owner`, except those whose lease id is in `keep`.

        A worker that re-announces itself after a dispatcher restart keeps the leases it
        still holds (`keep`); the rest (e.g. jobs whose ack was lost) are the caller's to
        take back with `fail`, in the same transaction (the rows stay locked for it). Rows
        another transaction holds are skipped: they are being settled there, or their lease
        expires and the rescue (`expired`) finds them.
        """

    def leased_with_prefix(self, prefix: str) -> list[Attempt]:
        """Every current lease whose owner's name starts with `prefix`.

        Owners look like ``"<node>/<pid>/<incarnation>"``: a node restarting reads
        ``"<node>/"`` to take back the leases of its own earlier runs. The prefix is
        compared literally (``%`` and ``_`` are plain characters); ``""`` matches every
        lease. The rows stay locked for the caller's `fail` in the same transaction; rows
        another transaction holds are skipped, as in `leased_by`.
        """

    def expired(self) -> list[Attempt]:
        """Every lease whose expiry has passed by the journal's clock.

        Rows another transaction holds locked are skipped, never waited on (a rescue
        must not stall behind another node); they are found by a later call.
        """

    def declare_tasks(self, tasks: Sequence[TaskDefaults]) -> None:
        """Record the defaults of `tasks`, replacing earlier declarations of the same names.

        Nodes write their registry's declarations at start; the last writer wins (within
        one batch, the last of a name).

        Raises:
            JournalError: the journal refused a declaration (``max_attempts`` below 1).
        """

    def declared_tasks(self, names: Sequence[str]) -> dict[str, TaskDefaults]:
        """``{name: its declared defaults}`` for those of `names` that some node declared."""

    def put_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        """Store the definitions of `schedules`, replacing those of the same names.

        A new name is stored with its row's `added_at` and `last_fired`; a name already
        stored keeps its own (a changed definition does not fire again what already fired).

        Raises:
            JournalError: the journal refused a row (an unknown ``catch_up`` or ``source``).
        """

    def remove_schedules(self, names: Sequence[str]) -> int:
        """Delete the schedules `names`; returns how many there were."""

    def schedules(self) -> list[ScheduleRow]:
        """Every stored schedule, by name."""

    def fire_schedule(self, name: str, previous: float | None, fired: float, jobs: Sequence[NewJob]) -> bool:
        """Move schedule `name`'s ``last_fired`` from `previous` to `fired` and enqueue `jobs`, together.

        A compare-and-set: only if ``last_fired`` is still exactly `previous` (None: never
        fired). Otherwise (another scheduler fired it since it was read, or the schedule
        was removed) nothing is written and it returns False. Inside the caller's
        transaction both writes commit or neither does, so a fire time fires once however
        many schedulers, nodes or restarts see it. `jobs` may be empty (times skipped by
        the catch-up policy still move ``last_fired``). A job its queue's ``max_depth``
        refuses is not added and is logged; the time still counts as fired.
        """

    def renew(self, owners: Sequence[str], lease_for: float) -> int:
        """Extend the leases of live `owners` to now + `lease_for`. Returns rows renewed."""

    def promote(self) -> int:
        """Move scheduled and retry jobs that are due to ready. Returns the number moved.

        With per-key rules declared (``key_rate``, ``key_circuit_breaker``), also admit the
        blocked jobs of up to `KEYS_PER_TICK` keys whose rules let them through again (a token
        due, a cool-down over; counted in the number returned when made ready), and delete
        up to `KEY_ROWS_PRUNED_PER_TICK` per-key rows that hold nothing (docs/rate-limits-and-breakers.md)."""

    def has_due(self) -> bool:
        """Whether a scheduled or retry job is due, read without taking a write lock.

        The scheduler asks this every tick and promotes only when it is True, so an idle
        node never writes (on SQLite a write would take the file's lock from producers).
        True too when a key held back by its per-key rules is due (`promote` admits it).
        """

    def has_ready(self, queues: Sequence[str]) -> bool:
        """Whether a job of one of `queues` is ready, read without taking a write lock."""

    def take_admitted(self) -> set[str]:
        """The queues that keyed jobs were admitted to by this journal's writes since the last
        call (a job of their flow key ended and the next became ready); then forgets them.

        The writer wakes those queues' dispatchers after each commit. A journal whose
        admissions wake nodes by another path (PostgreSQL: its NOTIFY) returns an empty set.
        """

    def cancel(self, job_id: str) -> bool:
        """Cancel a job in any non-final state (blocked, scheduled, ready, leased or retry).

        A leased job's lease becomes stale: the worker's later ack, failure, release or
        renewal is rejected. Returns True if the job was cancelled, False if it was
        already final or is unknown.
        """

    def retry_dead(self, job_id: str) -> bool:
        """Give a dead or failed job a fresh set of attempts and make it ready."""

    def cancelled(self, job_ids: Sequence[str]) -> list[str]:
        """Those of `job_ids` that are cancelled (a node asks this of the jobs it runs), a read."""

    def pause_queue(self, queue: str) -> bool:
        """Pause `queue` on every node sharing this journal: `lease` takes none of its jobs
        (and `has_ready` sees none) until `resume_queue`. Jobs already leased run on.

        Returns True if it was running, False if it was already paused.
        """

    def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again. Returns True if it was paused, False if it was not."""

    def paused_queues(self) -> list[str]:
        """The paused queues' names, sorted."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}`` (states with no job left out), exact, read from the
        counts the journal keeps as jobs move (see docs/architecture.md), never from the jobs."""

    def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds (`MIN_STATS_WINDOW` to
        `MAX_STATS_WINDOW`): jobs finished and failed, leases and their queue wait, read from
        per-queue slots of `STATS_SLOT` s kept as jobs finish and are leased. Queues with nothing
        in the window are left out.

        Raises:
            ValueError: `window` out of its range.
        """

    def get(self, job_id: str) -> JobInfo | None:
        """Return the job, with its recorded errors, or None."""

    def result(self, job_id: str) -> JobResult | None:
        """Read the job's state and outcome (result, or last error and traceback); None if unknown.

        A result whose time has passed by the journal's clock reads as expired, whether or
        not `expire_results` removed it yet.
        """

    def expire_results(self, limit: int) -> int:
        """Remove up to `limit` results whose time has passed; returns how many.

        The rows stay (with their state and expiry); only the stored value goes. Called
        in small batches by the node's upkeep, so no sweep holds the journal for long.
        """

    def prune(self, older_than: Mapping[JobState, float], limit: int) -> int:
        """Delete up to `limit` finished jobs, oldest first: those in a state of `older_than`
        that finished more than its seconds ago by the journal's clock.

        A job goes with everything kept of it: its error rows and its result. Each state's
        jobs are found by an index on (state, finished_at), a range scan however many rows
        the journal holds, so a call is a short write; the node's upkeep calls it in small
        batches while a backlog lasts (see docs/retention.md). On a journal shared by several
        nodes, rows another transaction holds are skipped, never waited on.

        Args:
            older_than: ``{final state: seconds}``; states missing from it are kept (forever).
            limit: the most jobs removed by this call (0: none).

        Returns:
            How many jobs were removed; less than `limit` means no more were due when it ran.

        Raises:
            ValueError: a state that is not final, an age or limit out of range (`check_prune`).
        """

    def list_jobs(self, *, state: JobState | None = None, queue: str | None = None, task: str | None = None,
                  after: str | None = None, limit: int = 50) -> list[JobSummary]:
        """Up to `limit` jobs with ids above `after`, in id order (a keyset page: pass the last
        id seen as `after` for the next one), of `state`, `queue` and `task` when given.

        Never a scan of the table: with a state or queue, each (state, queue) pair is a range
        of the index on (state, queue, id), read from `after` on and merged; with neither,
        the primary key from `after` on. `task` filters the rows those ranges yield.

        Raises:
            ValueError: an unknown state or a limit outside 1..`MAX_LIST_LIMIT` (`check_listing`).
        """

    def inspect(self, job_id: str) -> JobDetail | None:
        """Everything kept of one job, with every recorded attempt's error; None if unknown."""

    def oldest_ready(self) -> dict[str, float]:
        """``{queue: created_at}`` of each queue's earliest ready job (by id), for queues with one."""

    def clear_queue(self, queue: str, states: Sequence[JobState], limit: int) -> int:
        """Delete up to `limit` jobs of `queue` waiting in `states` (a subset of `WAITING_STATES`),
        with their error rows; returns how many (less than `limit`: none left). On a shared
        journal, rows another transaction holds are skipped, never waited on.

        Raises:
            ValueError: a state outside `WAITING_STATES`, or a negative limit.
        """

    def try_lead(self, name: str, holder: str, ttl: float) -> bool:
        """Hold the leadership `name` (a duty that must run on one node only) for `ttl` seconds.

        True when `holder` has it now: it was free, expired, or already `holder`'s (then
        renewed). Expiry is judged by the journal's clock; a holder must stop acting by its
        own deadline, measured on its monotonic clock from before this call.
        """

    def resign(self, name: str, holder: str) -> bool:
        """Give up `name` if `holder` has it. Returns whether it did."""

    def close(self) -> None:
        """Release the connection and any node lock. Idempotent."""
