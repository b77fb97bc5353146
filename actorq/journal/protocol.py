"""The `Journal` protocol: the durable queue as a small set of state transitions.

Job states and who moves a job between them::

    scheduled ──(due)──▶ ready ──lease──▶ leased ──complete──▶ succeeded
        ▲                  ▲                 │
        │                  ├──── release ────┤ (never started: attempt given back)
        │                  ├──── reclaim ────┤ (owner died / lease expired: attempt counted)
        └──── retry ◀──────┼───── fail ──────┤ (attempts left, after backoff)
                           │                 ├─▶ dead    (attempts used up, by fail or reclaim)
                           │                 └─▶ failed  (the task gave up for good, or crashed
                           │                              and is declared ``on_crash="fail"``)
                           └──── retry_dead ◀── dead / failed
       cancelled ◀── cancel ── scheduled / ready / leased / retry

Fencing: every lease has a lease id. `complete`, `fail` and `release` name the
lease they answer; once the job left that lease (reclaimed, expired, cancelled,
leased again) the answer is rejected and not counted in the return value.

Every method is one batched transition. A backend is used from one thread at
a time. Methods called inside ``with journal.transaction():`` share one atomic,
durable commit (group commit); called outside, each commits on its own.
Nothing here knows about actors, processes or sockets.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Collection, NamedTuple, Protocol, Sequence, runtime_checkable

__all__ = [
    "Failure",
    "JobInfo",
    "JobState",
    "Journal",
    "LIVE_STATES",
    "LeasedJob",
    "NewJob",
    "TERMINAL_STATES",
]


class JobState(StrEnum):
    """The states of a job. Stored as these exact strings."""

    SCHEDULED = "scheduled"
    """Waits for its ``run_at``. In: enqueue with a future time. Out: the scheduler's
    promotion (to ready) or cancel. A crash leaves it untouched."""
    READY = "ready"
    """Due and waiting for a worker. In: enqueue, promotion, release, reclaim. Out: lease
    by a dispatcher, or cancel."""
    LEASED = "leased"
    """Handed to a worker under a lease (owner, lease id, expiry); the attempt is counted
    when the lease is taken. Out: complete, fail, release, reclaim when the owner dies
    or the lease expires, or cancel (the lease is then stale). A crash of the owner leaves
    it leased until reclaimed."""
    RETRY = "retry"
    """The last attempt raised and attempts are left; waits for its backoff (``run_at``).
    Out: promotion to ready, or cancel."""
    SUCCEEDED = "succeeded"
    """Final. The task returned and the ack was journaled."""
    FAILED = "failed"
    """Final. The task gave up for good (raised `actorq.Discard`), or its owner crashed and
    the task is declared ``on_crash="fail"``; can be retried by hand."""
    DEAD = "dead"
    """Final. Attempts used up (exceptions and crashes alike) or the task is unknown; kept
    with its errors for inspection and can be retried by hand."""
    CANCELLED = "cancelled"
    """Final. Cancelled by request from any non-final state; if it was leased, the
    worker's later ack, failure or renewal is rejected as stale."""


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})
LIVE_STATES = (JobState.SCHEDULED, JobState.READY, JobState.LEASED, JobState.RETRY)
"""The non-final states, in the order a job goes through them: a live job can be cancelled
and holds its unique key."""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert.

    Attributes:
        id: client-made, time-ordered id (`actorq.ids.new_id`); re-sending it is a no-op.
        queue: queue name.
        task: registered task name.
        payload: msgpack of ``[args, kwargs]``.
        priority: lower runs first among ready jobs of a queue.
        run_at: Unix time before which it must not run; ``None`` means now.
        max_attempts: attempts (runs and crashes) before it goes dead.
        unique_key: at most one live job (scheduled, ready, leased or retry) holds a
            key; a job whose key is held is not inserted (see `Journal.holders`).
    """

    id: str
    queue: str
    task: str
    payload: bytes
    priority: int = 0
    run_at: float | None = None
    max_attempts: int = 20
    unique_key: str | None = None


class LeasedJob(NamedTuple):
    """A job handed out by `Journal.lease`; `attempt` is the number of this run (1-based)."""

    id: str
    queue: str
    task: str
    payload: bytes
    attempt: int
    max_attempts: int
    lease_id: int


class Failure(NamedTuple):
    """An attempt that raised.

    Attributes:
        job_id, lease_id: the lease being answered (stale leases are rejected).
        error: "ExceptionType: message", stored as text, never as an object.
        retry_at: Unix time of the next attempt if attempts are left.
        final_state: ``None`` to retry while attempts are left (then dead); ``"failed"``
            when the task gave up for good; ``"dead"`` when it can never run (unknown task).
    """

    job_id: str
    lease_id: int
    error: str
    retry_at: float
    final_state: str | None = None


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

    def enqueue(self, jobs: Sequence[NewJob]) -> int:
        """Insert `jobs` as ready (or scheduled when `run_at` is in the future).

        Ids already present are skipped (idempotent re-send), and so are jobs whose
        unique key a live job holds. Returns the number inserted.
        """

    def holders(self, keys: Sequence[str]) -> dict[str, str]:
        """``{unique key: id of the live job holding it}`` for those of `keys` that are held."""

    def lease(self, queues: Sequence[str], owner: str, limit: int, lease_for: float) -> list[LeasedJob]:
        """Move up to `limit` ready jobs of `queues` to leased, owned by `owner` for `lease_for` s.

        Counts one attempt per job. Lower priority first, then oldest id.
        """

    def complete(self, acks: Sequence[tuple[str, int]]) -> int:
        """Move ``(job_id, lease_id)`` pairs from leased to succeeded.

        A pair whose lease is no longer current is rejected (fencing). Returns the number
        accepted; ``len(acks) - result`` were stale.
        """

    def fail(self, failures: Sequence[Failure]) -> int:
        """Record failed attempts: retry (attempts left), failed (final) or dead (none left).

        Stale leases are rejected. Returns the number accepted.
        """

    def release(self, leases: Sequence[tuple[str, int]]) -> int:
        """Return leased jobs that never started to ready, giving their attempt back."""

    def reclaim(self, owner: str, reason: str, *, keep: Collection[int] = (),
                fail_tasks: Collection[str] = ()) -> int:
        """Take back every job leased by `owner`, except the leases whose id is in `keep`.

        A worker that re-announces itself after a dispatcher restart keeps the leases it
        still holds (`keep`); the rest (e.g. jobs whose ack was lost) are taken back.
        The crash counts as the attempt (it was counted at lease time) and `reason` is
        recorded as the attempt's error. A job whose task is in `fail_tasks` (declared
        ``on_crash="fail"``) goes to failed; any other goes to ready, or to dead when its
        attempts are used up. Returns the number of jobs taken back.
        """

    def reclaim_all(self, reason: str, owner_prefix: str = "", *, fail_tasks: Collection[str] = ()) -> int:
        """`reclaim` every job leased by an owner whose name starts with `owner_prefix`.

        Owners look like ``"<node>/<pid>/<incarnation>"``: a node restarting passes
        ``"<node>/"`` to take back the leases of its own earlier runs. The prefix is
        compared literally (``%`` and ``_`` are plain characters). The empty prefix
        matches every owner.
        """

    def expire(self, reason: str = "lease expired", *, fail_tasks: Collection[str] = ()) -> int:
        """`reclaim` every job whose lease has expired by the journal's clock."""

    def renew(self, owners: Sequence[str], lease_for: float) -> int:
        """Extend the leases of live `owners` to now + `lease_for`. Returns rows renewed."""

    def promote(self) -> int:
        """Move scheduled and retry jobs that are due to ready. Returns the number moved."""

    def cancel(self, job_id: str) -> bool:
        """Cancel a job in any non-final state (scheduled, ready, leased or retry).

        A leased job's lease becomes stale: the worker's later ack, failure, release or
        renewal is rejected. Returns True if the job was cancelled, False if it was
        already final or is unknown.
        """

    def retry_dead(self, job_id: str) -> bool:
        """Give a dead or failed job a fresh set of attempts and make it ready."""

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}``."""

    def get(self, job_id: str) -> JobInfo | None:
        """Return the job, with its recorded errors, or None."""

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
