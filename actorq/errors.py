"""Exceptions raised by actorq's public API.

Every error a caller can act on has its own class here, so that handling code
never matches on message text.
"""

from __future__ import annotations

__all__ = [
    "ActorQError",
    "ActorStopped",
    "AskTimeout",
    "JournalError",
    "JournalLocked",
    "MailboxFull",
    "NotCommitted",
    "QueueFull",
    "UnknownTask",
]


class ActorQError(Exception):
    """Base class of every exception that actorq raises on purpose."""


class MailboxFull(ActorQError):
    """`tell` found the target actor's bounded mailbox full; the message was not queued."""


class ActorStopped(ActorQError):
    """The target actor has stopped; the message was not delivered."""


class AskTimeout(ActorQError, TimeoutError):
    """`ask` got no reply within its timeout. The request may or may not have been handled.

    Also raised by a queue's ``ask`` and by ``Client.result`` when the job did not end
    within the timeout: the job goes on (it may still run and succeed), and its result
    can be fetched later by id with ``Client.result``.
    """


class JobFailed(ActorQError):
    """The job ended without a result: it raised until its attempts ran out, gave up, or was cancelled.

    Carries the remote error as text, never as an object (nothing from a worker is
    unpickled): `type` and `message` split from the journal's last error
    (``"Type: message"``), and `traceback` the text of the last attempt that raised.

    Args:
        job_id: the job.
        state: its final state (``dead``, ``failed`` or ``cancelled``).
        error: its last error text, ``"Type: message"`` (or why it was lost, e.g. ``"worker died"``).
        traceback: the traceback text of its last attempt that raised, or None.
    """

    def __init__(self, job_id: str, state: str, error: str | None, traceback: str | None = None) -> None:
        self.job_id = job_id
        self.state = state
        self.error = error or state
        head, sep, tail = self.error.partition(": ")
        is_type = bool(sep) and head.isidentifier()
        self.type = head if is_type else ""
        """The remote exception's class name, or "" when the job did not end by an exception."""
        self.message = tail if is_type else self.error
        """The remote exception's message (or why the job ended)."""
        self.traceback = traceback
        """The remote traceback text, or None."""
        super().__init__(f"job {job_id} {state}: {self.error}")


class ResultExpired(ActorQError, LookupError):
    """The job succeeded, but its result was kept for less time than has passed since (``[results] ttl``)."""


class JournalError(ActorQError):
    """The journal could not carry out a state transition (I/O error, full disk, corrupt file).

    Args:
        message: what failed, for people.
        transient: the failure may pass if the same work is tried again: a deadlock, a
            serialization failure, a lock wait past ``lock_timeout``, a connection lost
            before its ``COMMIT`` was sent. Nothing of the transaction was applied.
        maybe_committed: the connection was lost while its ``COMMIT`` was under way: the
            transaction may or may not have been applied.
        refused: the journal refused the values of the statement (a constraint): the same
            values fail again, other work would not.
    """

    def __init__(self, message: str = "", *, transient: bool = False, maybe_committed: bool = False,
                 refused: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.maybe_committed = maybe_committed
        self.refused = refused


class JournalLocked(JournalError):
    """Another node already owns this journal file (SQLite allows one node per file)."""


class NotCommitted(JournalError):
    """A job was not committed to the journal, so it was never accepted.

    Raised by the confirmed enqueue form. Re-sending the same job (same id) is
    safe: enqueue is idempotent on the job id.
    """


class UnknownTask(ActorQError, LookupError):
    """A job named a task that is not in the worker's registry."""


class QueueFull(ActorQError):
    """An enqueue was refused: it would take `queue` past its ``max_depth`` waiting jobs.

    Nothing of the refused jobs was inserted (never a silent drop). `depth` is the number
    of waiting jobs (ready, scheduled, retry) the journal counted, `limit` the queue's
    ``max_depth``. Enqueue again once workers have drained the queue, or pass ``block``.
    """

    def __init__(self, queue: str, depth: int, limit: int) -> None:
        self.queue = queue
        self.depth = depth
        self.limit = limit
        super().__init__(f"queue {queue!r} is full: {depth} waiting jobs, max_depth {limit}")

    def __reduce__(self) -> tuple[object, ...]:
        return (QueueFull, (self.queue, self.depth, self.limit))
