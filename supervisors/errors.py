"""Exceptions of `actorq.supervisors`: OTP's ``{error, ...}`` outcomes as classes.

Each outcome a caller can act on has its own class, so handling code never
matches on message text. Admin calls raise the `SupervisorError` subclasses;
invalid specs and flags raise `InvalidChildSpec` / `InvalidSupFlags`, which are
also `ValueError`s.
"""

from __future__ import annotations

from actorq.errors import ActorQError

__all__ = [
    "AlreadyPresent",
    "AlreadyStarted",
    "InvalidChildSpec",
    "InvalidSupFlags",
    "NotFound",
    "NotSupported",
    "Restarting",
    "Running",
    "StartFailed",
    "SupervisorError",
]


class InvalidChildSpec(ValueError, ActorQError):
    """A child spec field has a bad value, or two specs share an id. The message names both."""


class InvalidSupFlags(ValueError, ActorQError):
    """A supervisor flag has a bad value. The message names the flag, the value and what was expected."""


class SupervisorError(ActorQError):
    """Base class of the outcomes a supervisor's admin calls report (OTP's ``{error, _}``)."""


class AlreadyStarted(SupervisorError):
    """`start_child` named an id whose child is running (``already_started``).

    Attributes:
        pid: the running child's pid (an int for a process, an `ActorRef` for an actor).
    """

    def __init__(self, child_id: str, pid: object) -> None:
        super().__init__(f"child {child_id!r} is already started (pid {pid})")
        self.child_id = child_id
        self.pid = pid


class AlreadyPresent(SupervisorError):
    """`start_child` named an id that is known but not running (``already_present``).

    Use `restart_child` to start it again, or `delete_child` first.
    """

    def __init__(self, child_id: str) -> None:
        super().__init__(f"child {child_id!r} is already present (not running)")
        self.child_id = child_id


class Running(SupervisorError):
    """`restart_child` or `delete_child` on a running child (``running``)."""

    def __init__(self, child_id: str) -> None:
        super().__init__(f"child {child_id!r} is running")
        self.child_id = child_id


class Restarting(SupervisorError):
    """`restart_child` or `delete_child` on a child whose restart is pending (``restarting``)."""

    def __init__(self, child_id: str) -> None:
        super().__init__(f"child {child_id!r} is restarting")
        self.child_id = child_id


class NotFound(SupervisorError):
    """No child with that id or pid (``not_found``)."""

    def __init__(self, target: object) -> None:
        super().__init__(f"no child {target!r}")
        self.target = target


class NotSupported(SupervisorError):
    """The call does not apply to this supervisor's strategy (OTP's ``simple_one_for_one`` error).

    A ``simple_one_for_one`` pool has no ids: `restart_child` and `delete_child`
    do not apply, and `terminate_child` takes a pid.
    """


class StartFailed(SupervisorError):
    """A start failed: a child's start function raised or returned something else
    (OTP's ``{error, Reason}``), or a supervisor's ``init`` did.

    When the reason is an exception it is also the ``__cause__``.

    Attributes:
        child_id: the child that failed to start; None when the supervisor's
            own ``init`` failed.
        reason: the exception raised, or a description of the bad return.
    """

    def __init__(self, child_id: str | None, reason: object) -> None:
        what = "supervisor init" if child_id is None else f"child {child_id!r}"
        super().__init__(f"{what} failed to start: {reason!r}")
        self.child_id = child_id
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason
