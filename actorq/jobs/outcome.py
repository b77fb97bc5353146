"""What the end of an attempt means for its job: one pure decision for every path.

Every attempt ends one way (`AttemptEnd`), reported by whoever saw it end::

    worker process   OK, RAISED, PERMANENT, DISCARDED,                    ── ACK ──┐
                     TIMED_OUT, UNRUNNABLE (unknown task); RAISED and              │
                     TIMED_OUT may carry a delay (Retry, a backoff function)       │
    dispatcher       CRASHED (worker died or went silent), UNRUNNABLE       ───────┤
                     (payload too large for a frame)                               ├─▶ journal writer:
    node at start    CRASHED (leases of an earlier run of this node)        ───────┤   reads the attempt
    leader           LEASE_EXPIRED (the owner vanished: another node died)  ───────┘   (task, attempt,
                                                                                        max_attempts),
                                          decide(policy, end, attempt, max_attempts, spread, delay)
                                                                                      ─▶ Journal.fail()
                                                                                         stores it

`decide` turns the end, the task's `TaskPolicy` and the attempt count into an
`Outcome`; the journal only stores it. The whole table::

    end                       condition                    state      when
    ────────────────────────  ───────────────────────────  ─────────  ───────────────────────────
    OK                                                     succeeded
    CANCELLED                                              cancelled
    DISCARDED                 (the task raised Discard)    failed
    PERMANENT                 (not retryable, see below)   failed
    UNRUNNABLE                                             dead
    RAISED, TIMED_OUT         attempt >= max_attempts      dead
    RAISED, TIMED_OUT         the worker sent a delay      retry      after that delay
    RAISED, TIMED_OUT         otherwise                    retry      after policy.retry's backoff
    CRASHED, LEASE_EXPIRED    policy.on_crash == "fail"    failed     (at most once for crashes)
    CRASHED, LEASE_EXPIRED    attempt >= max_attempts      dead
    CRASHED, LEASE_EXPIRED    otherwise                    ready      at once

A crash counts as the attempt: the attempt was counted when the job was leased.

Which exceptions are retryable is decided in the worker, where the classes live
(`actorq.jobs.retry.retryable`): `Retry` and `TransientError` always are,
`PermanentError` never, then the task's ``dont_retry_on`` and ``retry_on``. One that is
not ends ``PERMANENT``. The worker's delay comes from `Retry(delay=...)` or the task's
backoff function; it never gives an attempt more: raised on the last attempt, the job
is dead whatever the delay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from actorq.jobs.retry import RetryPolicy
from actorq.journal._limits import parse_rate
from actorq.journal.protocol import (
    DEFAULT_MAX_ATTEMPTS, MAX_CONCURRENCY_LIMIT, MAX_QUEUE_LIMIT, MAX_TIMEOUT, MAX_UNIQUE_FOR, CircuitBreaker, JobState,
)

__all__ = ["AttemptEnd", "DEFAULT_POLICY", "ON_CRASH", "Outcome", "TaskPolicy", "decide"]

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
ON_CRASH = ("reclaim", "fail")


class AttemptEnd(StrEnum):
    """How one attempt of a job ended. The values travel in worker acks."""

    OK = "ok"
    """The task returned."""
    RAISED = "raised"
    """The task raised a retryable exception (`actorq.Retry`, or any the task's rules retry)."""
    PERMANENT = "permanent"
    """The task raised an exception that is not retried: an `actorq.PermanentError`, or one
    its ``retry_on`` / ``dont_retry_on`` rule out."""
    DISCARDED = "discarded"
    """The task raised `actorq.Discard`: it gave up for good."""
    UNRUNNABLE = "unrunnable"
    """The job can never run here: its task is unknown, or its payload does not fit in a frame."""
    CRASHED = "crashed"
    """The worker process running it died, or went silent past the heartbeat timeout."""
    LEASE_EXPIRED = "lease_expired"
    """Its lease expired without a word from its owner (a node that died or was cut off)."""
    TIMED_OUT = "timed_out"
    """The task ran past its time limit."""
    CANCELLED = "cancelled"
    """The job was cancelled while it ran."""


_RETRIED = frozenset({AttemptEnd.RAISED, AttemptEnd.TIMED_OUT})
_CRASHES = frozenset({AttemptEnd.CRASHED, AttemptEnd.LEASE_EXPIRED})
_FIXED = {
    AttemptEnd.OK: JobState.SUCCEEDED,
    AttemptEnd.CANCELLED: JobState.CANCELLED,
    AttemptEnd.DISCARDED: JobState.FAILED,
    AttemptEnd.PERMANENT: JobState.FAILED,
    AttemptEnd.UNRUNNABLE: JobState.DEAD,
}


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """What a task declares about its jobs (see `TaskRegistry.task`).

    Attributes:
        queue: where its jobs go unless the producer names a queue.
        priority: its jobs' priority unless the producer sets one (lower runs first).
        max_attempts: attempts (runs and crashes) before a job goes dead, unless the
            producer sets it.
        retry: the backoff between attempts after the task raised (kind ``function``: the
            worker sends each wait; see `RetryPolicy`).
        on_crash: ``"reclaim"`` (back to ready at once, the crash counted as an attempt)
            or ``"fail"`` (the job ends failed: for work that must never run twice).
        timeout: seconds an attempt may run before it is stopped and ends ``timed_out``
            (None: no limit).
        unique_for: seconds each job holds its unique key from its insert, whatever its
            state (None: only while live); a job with no key gets one made of the task name
            and its arguments (see docs/unique.md).
        concurrency_limit: how many jobs of one concurrency key run at once, for its jobs
            that carry a key and no limit of their own (None: 1).
        on_conflict: what enqueueing such a job does when its key has that many admitted jobs:
            ``"block"`` (None too: it is added and waits) or ``"discard"`` (nothing is added).
        concurrency: its jobs leased at once, every node together (None: no limit of its own).
        rate: its jobs leased per second, minute or hour (``"10/s"``), every node together;
            `burst`: the most tokens its bucket holds (None: the rate's count). See
            docs/rate-limits-and-breakers.md.
        circuit_breaker: stops leasing its jobs for a while when its attempts keep failing
            (`CircuitBreaker`; None: none).
        key_rate: its jobs with a flow key (ordering or concurrency key) admitted per second,
            minute or hour **for each key** (``"10/m"``); `key_burst` the most tokens each
            key's bucket holds (None: the key rate's count).
        key_circuit_breaker: a `CircuitBreaker` for each flow key of its jobs: while a key's
            is open, that key's jobs stay blocked; other keys run.
    """

    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_crash: str = "reclaim"
    timeout: float | None = None
    unique_for: float | None = None
    concurrency_limit: int | None = None
    on_conflict: str | None = None
    concurrency: int | None = None
    rate: str | None = None
    burst: int | None = None
    circuit_breaker: CircuitBreaker | None = None
    key_rate: str | None = None
    key_burst: int | None = None
    key_circuit_breaker: CircuitBreaker | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"queue must be a non-empty string, got {self.queue!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")
        if self.on_crash not in ON_CRASH:
            raise ValueError(f"on_crash must be one of {', '.join(ON_CRASH)}, got {self.on_crash!r}")
        check_timeout(self.timeout)
        check_unique_for(self.unique_for)
        check_concurrency(self.concurrency_limit, self.on_conflict)
        check_task_rules(self.concurrency, self.rate, self.burst)
        if self.circuit_breaker is not None and not isinstance(self.circuit_breaker, CircuitBreaker):
            raise ValueError(f"circuit_breaker must be a CircuitBreaker or None, got {self.circuit_breaker!r}")
        check_key_rules(self.key_rate, self.key_burst, self.key_circuit_breaker)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON), as `from_dict` reads it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskPolicy":
        """Rebuild a policy from `to_dict`'s output.

        Raises:
            ValueError, TypeError: the data does not describe a valid policy.
        """
        breaker = data.get("circuit_breaker")
        key_breaker = data.get("key_circuit_breaker")
        return cls(**{**data, "retry": RetryPolicy(**data.get("retry", {})),
                      "circuit_breaker": None if breaker is None else CircuitBreaker(**breaker),
                      "key_circuit_breaker": None if key_breaker is None else CircuitBreaker(**key_breaker)})


def check_task_rules(concurrency: object, rate: object, burst: object) -> None:
    """Refuse a task's rules out of range: a concurrency that is not None or an integer from 1
    to `MAX_QUEUE_LIMIT`, a rate that is not ``COUNT/UNIT`` (``"10/s"``), a burst without a
    rate or out of that range.

    Raises:
        ValueError: naming the option, the value and what is expected.
    """
    if concurrency is not None and not (isinstance(concurrency, int) and not isinstance(concurrency, bool)
                                        and 1 <= concurrency <= MAX_QUEUE_LIMIT):
        raise ValueError(f"concurrency must be None or an integer from 1 to {MAX_QUEUE_LIMIT:,}, got {concurrency!r}")
    if rate is None:
        if burst is not None:
            raise ValueError(f"burst needs a rate, got burst={burst!r} and no rate")
        return
    try:
        parse_rate(rate, burst)
    except ValueError as exc:
        raise ValueError(f"rate: {exc}" if "burst" not in str(exc) else f"burst: {exc}") from None


def check_key_rules(key_rate: object, key_burst: object, key_circuit_breaker: object) -> None:
    """Refuse a task's per-key rules: a key rate that is not ``COUNT/UNIT``, a key burst
    without a key rate or out of range, a key breaker that is not a `CircuitBreaker`.

    Raises:
        ValueError: naming the option, the value and what is expected.
    """
    if key_rate is None:
        if key_burst is not None:
            raise ValueError(f"key_burst needs a key_rate, got key_burst={key_burst!r} and no key_rate")
    else:
        try:
            parse_rate(key_rate, key_burst)
        except ValueError as exc:
            raise ValueError(f"key_rate: {exc}" if "burst" not in str(exc) else f"key_burst: {exc}") from None
    if key_circuit_breaker is not None and not isinstance(key_circuit_breaker, CircuitBreaker):
        raise ValueError(f"key_circuit_breaker must be a CircuitBreaker(failures=..., window=..., cool_down=..., "
                         f"probes=...) or None, got {type(key_circuit_breaker).__name__}")


def check_timeout(timeout: object) -> None:
    """Refuse a time limit that is not None or a finite number of seconds > 0.

    Raises:
        ValueError: naming the value and what is expected.
    """
    _check_seconds("timeout", timeout, MAX_TIMEOUT)


ON_CONFLICT = ("block", "discard")
"""What an enqueue does past its concurrency key's limit: add the job to wait, or add nothing."""


def check_concurrency(limit: object, on_conflict: object) -> None:
    """Refuse a concurrency limit that is not None or an integer from 1 to
    `MAX_CONCURRENCY_LIMIT`, and an `on_conflict` that is not None or one of `ON_CONFLICT`.

    Raises:
        ValueError: naming the value and what is expected.
    """
    if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool)
                                  and 1 <= limit <= MAX_CONCURRENCY_LIMIT):
        raise ValueError(f"concurrency_limit must be None or an integer from 1 to {MAX_CONCURRENCY_LIMIT:,}, "
                         f"got {limit!r}")
    if on_conflict is not None and on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be None or one of {', '.join(map(repr, ON_CONFLICT))}, "
                         f"got {on_conflict!r}")


def check_unique_for(unique_for: object) -> None:
    """Refuse a unique period that is not None or a finite number of seconds > 0, at most a year.

    Raises:
        ValueError: naming the value and what is expected.
    """
    _check_seconds("unique_for", unique_for, MAX_UNIQUE_FOR)


def _check_seconds(name: str, value: object, most: float) -> None:
    """Refuse `value` unless it is None or a number of seconds in (0, `most`]."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= most:
        raise ValueError(f"{name} must be a number of seconds > 0 and at most {most:,}, got {value!r}")


DEFAULT_POLICY = TaskPolicy()


class Outcome(NamedTuple):
    """What becomes of a job after an attempt: its next state, and for ``retry`` when."""

    state: JobState
    retry_in: float | None = None
    """Seconds until the next attempt (``retry`` only)."""


def decide(policy: TaskPolicy, end: AttemptEnd, attempt: int, max_attempts: int, spread: float,
           delay: float | None = None) -> Outcome:
    """Decide what `end` of attempt number `attempt` means for the job (the table above).

    Pure: the same arguments give the same outcome.

    Args:
        policy: the task's declared policy (`DEFAULT_POLICY` for a task this node does not know).
        end: how the attempt ended.
        attempt: the attempt's number, 1-based (counted when the job was leased).
        max_attempts: the job's own limit (resolved from the policy when it was enqueued).
        spread: a number in [0, 1) that places the backoff within the policy's jitter
            (the caller draws it, e.g. ``random.random()``).
        delay: seconds the worker asked to wait before the next attempt (`actorq.Retry`'s
            delay, or the task's backoff function's value), or None; used as given, without
            jitter, for RAISED and TIMED_OUT only.
    """
    fixed = _FIXED.get(end)
    if fixed is not None:
        return Outcome(fixed)
    if end in _RETRIED:
        if attempt >= max_attempts:
            return Outcome(JobState.DEAD)
        if delay is not None:
            return Outcome(JobState.RETRY, delay)
        return Outcome(JobState.RETRY, policy.retry.delay(attempt, spread))
    if end in _CRASHES:
        if policy.on_crash == "fail":
            return Outcome(JobState.FAILED)
        return Outcome(JobState.DEAD if attempt >= max_attempts else JobState.READY)
    raise ValueError(f"unknown attempt end {end!r}")
