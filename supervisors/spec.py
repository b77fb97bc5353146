"""Child specs and supervisor flags: frozen, validated, with OTP's names and defaults.

Every check raises `InvalidChildSpec` or `InvalidSupFlags` with a message that
names the child, the field, what was expected and what was given::

    child 'db': restart: expected one of permanent, transient, temporary, got 'sometimes'

Defaults (OTP's): ``restart="permanent"``, ``type="worker"``, ``shutdown`` 5 s
for a worker and ``"infinity"`` for a supervisor; ``strategy="one_for_one"``,
``intensity=1``, ``period=5`` s, ``auto_shutdown="never"``, no backoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol, Union, runtime_checkable

from actorq._kernel.ref import ActorRef
from actorq.supervisors.errors import InvalidChildSpec, InvalidSupFlags
from actorq.supervisors.exits import Exit

if TYPE_CHECKING:
    import asyncio

__all__ = ["IGNORE", "Backoff", "Child", "ChildSpec", "Ignore", "StartFn", "SupFlags", "check_specs"]

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
WORKER_SHUTDOWN = 5.0  # seconds; OTP's 5000 ms


class Ignore:
    """The type of `IGNORE`: what a start function (or a supervisor's ``init``) returns
    to say "nothing to start here", OTP's ``ignore``."""

    _instance: "Ignore | None" = None

    def __new__(cls) -> "Ignore":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "IGNORE"


IGNORE = Ignore()


@runtime_checkable
class Child(Protocol):
    """What a supervisor holds for a started child, whatever its kind.

    Attributes:
        pid: the OS pid (int) of a process child; the `ActorRef` of an actor child.
        ref: the `ActorRef` of an actor child; None for a process.
        name: a readable name for logs.
        exited: resolved exactly once, with the child's `Exit`, when it has exited.
    """

    pid: Any
    ref: ActorRef | None
    name: str
    exited: "asyncio.Future[Exit]"

    def stop(self) -> None:
        """Ask the child to stop (actor: exit signal ``"shutdown"``; process: SIGTERM). Returns at once."""

    def kill(self) -> None:
        """Kill the child now (actor: task cancelled; process: SIGKILL). Returns at once."""


StartFn = Callable[..., Awaitable[Union[Child, Ignore]]]
"""A child's start function, called as ``await start(*spec.args, *extra_args)``.

It returns a started `Child`, or `IGNORE`; raising means the start failed
(OTP's ``{error, Reason}``). It runs on the supervisor's loop thread.
"""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(choices)


@dataclass(frozen=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Args:
        id: the child's name inside its supervisor (a non-empty string).
        start: the `StartFn`; see `actor_start`, `process_start`, `supervisor_spec`.
        args: arguments for `start` (a tuple). Not kept for temporary children.
        restart: ``"permanent"`` (always restarted), ``"transient"`` (restarted
            after an abnormal exit only) or ``"temporary"`` (never; its spec is
            dropped when it exits).
        shutdown: seconds (> 0) to wait after asking the child to stop before
            killing it, ``"brutal_kill"`` (kill at once) or ``"infinity"`` (wait
            for ever). None means 5.0 for a worker and ``"infinity"`` for a
            supervisor; the stored value is always concrete.
        type: ``"worker"`` or ``"supervisor"``.
        significant: with the supervisor's ``auto_shutdown``, this child's exit
            can stop the supervisor (OTP 24's significant children). Only for
            transient and temporary children.
        replace_exit: an OS process child's exit code (1-255) that means "I ask to be
            replaced" (a worker whose task overran and cannot be stopped): a permanent or
            transient child exiting with it is started again at once, and the restart
            counts neither towards the supervisor's intensity nor its backoff. None
            (default): every exit is counted. Since such restarts are not bounded by
            intensity, only a child that uses the code on purpose, for a cause that
            ends, should declare it.

    Raises:
        InvalidChildSpec: a field has a bad value.
    """

    id: str
    start: StartFn
    args: tuple[Any, ...] = ()
    restart: str = "permanent"
    shutdown: float | str | None = None
    type: str = "worker"
    significant: bool = False
    replace_exit: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidChildSpec(f"child spec: id: expected a non-empty string, got {self.id!r}")
        where = f"child {self.id!r}"
        if not callable(self.start):
            raise InvalidChildSpec(f"{where}: start: expected a start function (a callable), got {self.start!r}")
        if not isinstance(self.args, tuple):
            raise InvalidChildSpec(f"{where}: args: expected a tuple, got {self.args!r}")
        if self.restart not in RESTART_TYPES:
            raise InvalidChildSpec(f"{where}: restart: expected {_one_of(RESTART_TYPES)}, got {self.restart!r}")
        if self.type not in CHILD_TYPES:
            raise InvalidChildSpec(f"{where}: type: expected {_one_of(CHILD_TYPES)}, got {self.type!r}")
        if self.shutdown is None:
            object.__setattr__(self, "shutdown", WORKER_SHUTDOWN if self.type == "worker" else "infinity")
        elif isinstance(self.shutdown, str):
            if self.shutdown not in ("brutal_kill", "infinity"):
                raise InvalidChildSpec(f"{where}: shutdown: expected seconds > 0, 'brutal_kill' or "
                                       f"'infinity', got {self.shutdown!r}")
        elif not (_is_number(self.shutdown) and 0 < self.shutdown < math.inf):
            raise InvalidChildSpec(f"{where}: shutdown: expected seconds > 0 (finite), 'brutal_kill' or "
                                   f"'infinity', got {self.shutdown!r}")
        if not isinstance(self.significant, bool):
            raise InvalidChildSpec(f"{where}: significant: expected True or False, got {self.significant!r}")
        if self.replace_exit is not None and (not isinstance(self.replace_exit, int)
                                              or isinstance(self.replace_exit, bool)
                                              or not 1 <= self.replace_exit <= 255):
            raise InvalidChildSpec(f"{where}: replace_exit: expected None or an exit code from 1 to 255, "
                                   f"got {self.replace_exit!r}")
        if self.significant and self.restart == "permanent":
            raise InvalidChildSpec(f"{where}: significant: a permanent child cannot be significant "
                                   "(expected restart 'transient' or 'temporary')")


@dataclass(frozen=True)
class Backoff:
    """An optional delay before restarts, on top of restart intensity (off by default).

    The n-th consecutive restart of a child waits ``min(cap, base * factor ** (n - 1))``
    seconds. Failed restart attempts count as consecutive restarts. The count
    starts again from 1 once a child has run for at least the supervisor's
    ``period`` before exiting. Restarts are scheduled, never slept through: the
    supervisor keeps handling messages meanwhile, and the child shows as
    ``restarting``. Intensity counts a restart when it is decided, not when it runs.

    Args:
        base: the first delay, seconds > 0.
        factor: growth per consecutive restart, >= 1.
        cap: the largest delay, seconds >= base.

    Raises:
        InvalidSupFlags: a bad value.
    """

    base: float
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not (_is_number(self.base) and 0 < self.base < math.inf):
            raise InvalidSupFlags(f"backoff: base: expected seconds > 0 (finite), got {self.base!r}")
        if not (_is_number(self.factor) and 1 <= self.factor < math.inf):
            raise InvalidSupFlags(f"backoff: factor: expected a finite number >= 1, got {self.factor!r}")
        if not (_is_number(self.cap) and self.base <= self.cap < math.inf):
            raise InvalidSupFlags(f"backoff: cap: expected finite seconds >= base ({self.base!r}), got {self.cap!r}")

    def delay(self, consecutive: int) -> float:
        """Seconds to wait before the `consecutive`-th consecutive restart (1 for the first)."""
        if consecutive < 1:
            return 0.0
        # Cap the exponent too, so a long failure streak cannot overflow the float.
        return min(self.cap, self.base * self.factor ** min(consecutive - 1, 1000))


@dataclass(frozen=True)
class SupFlags:
    """A supervisor's strategy and restart limits.

    Args:
        strategy: ``"one_for_one"`` (restart the failed child), ``"one_for_all"``
            (restart all), ``"rest_for_one"`` (restart the failed child and those
            started after it) or ``"simple_one_for_one"`` (a dynamic pool of
            children from one template spec).
        intensity: more than `intensity` restarts within `period` seconds makes
            the supervisor terminate its children and exit (an int >= 0).
        period: the sliding window, seconds > 0 (finite).
        auto_shutdown: ``"never"``, ``"any_significant"`` or ``"all_significant"``:
            whether the exit of significant children stops the supervisor.
        backoff: an optional `Backoff` for restarts.

    Raises:
        InvalidSupFlags: a bad value.
    """

    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5
    auto_shutdown: str = "never"
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidSupFlags(f"supervisor flags: strategy: expected {_one_of(STRATEGIES)}, "
                                  f"got {self.strategy!r}")
        if not (isinstance(self.intensity, int) and not isinstance(self.intensity, bool) and self.intensity >= 0):
            raise InvalidSupFlags(f"supervisor flags: intensity: expected an integer >= 0, got {self.intensity!r}")
        if not (_is_number(self.period) and 0 < self.period < math.inf):
            raise InvalidSupFlags(f"supervisor flags: period: expected seconds > 0 (finite), got {self.period!r}")
        if self.auto_shutdown not in AUTO_SHUTDOWN:
            raise InvalidSupFlags(f"supervisor flags: auto_shutdown: expected {_one_of(AUTO_SHUTDOWN)}, "
                                  f"got {self.auto_shutdown!r}")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise InvalidSupFlags(f"supervisor flags: backoff: expected a Backoff or None, got {self.backoff!r}")


def check_spec(flags: SupFlags, spec: object) -> ChildSpec:
    """Check one spec against a supervisor's flags; return it.

    Raises:
        InvalidChildSpec: not a `ChildSpec`, or significant under ``auto_shutdown="never"``.
    """
    if not isinstance(spec, ChildSpec):
        raise InvalidChildSpec(f"child spec: expected a ChildSpec, got {spec!r}")
    if spec.significant and flags.auto_shutdown == "never":
        raise InvalidChildSpec(f"child {spec.id!r}: significant: needs auto_shutdown 'any_significant' or "
                               "'all_significant', got auto_shutdown 'never'")
    return spec


def check_specs(flags: SupFlags, specs: Iterable[object]) -> tuple[ChildSpec, ...]:
    """Validate a supervisor's flags and spec list; return the specs as a tuple.

    Raises:
        InvalidSupFlags: `flags` is not a `SupFlags`.
        InvalidChildSpec: a bad spec, a duplicate id (named), or a
            ``simple_one_for_one`` list that is not exactly one template spec.
    """
    if not isinstance(flags, SupFlags):
        raise InvalidSupFlags(f"supervisor flags: expected a SupFlags, got {flags!r}")
    if isinstance(specs, (str, bytes, ChildSpec)):
        raise InvalidChildSpec(f"child specs: expected a list of ChildSpec, got {specs!r}")
    checked = tuple(check_spec(flags, spec) for spec in specs)
    seen: set[str] = set()
    for spec in checked:
        if spec.id in seen:
            raise InvalidChildSpec(f"child {spec.id!r}: id: duplicate id in the supervisor's child specs")
        seen.add(spec.id)
    if flags.strategy == "simple_one_for_one" and len(checked) != 1:
        raise InvalidChildSpec("child specs: simple_one_for_one takes exactly one child spec (the template), "
                               f"got {len(checked)}")
    return checked
