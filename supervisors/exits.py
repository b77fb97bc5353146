"""`Exit`: why a child stopped, in OTP's vocabulary, for actors and OS processes alike.

=============  ===================================================  ===========
kind           actor child                                          OS process
=============  ===================================================  ===========
``normal``     exited by itself with reason ``"normal"``            exit code 0
``shutdown``   stopped on request (``"shutdown"`` or                SIGTERM, or exit
               ``("shutdown", term)``)                              code 0, after the
                                                                    supervisor asked
``killed``     killed (task cancelled)                              SIGKILL
``error``      an exception, or any other reason                    other codes and
                                                                    signals
=============  ===================================================  ===========

``killed`` and ``error`` are abnormal: a transient child is restarted after
them, and only after them. A SIGTERM that the supervisor did not send is an
``error`` (``"signal SIGTERM"``): someone else killed the child.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

__all__ = ["KILLED", "NORMAL", "SHUTDOWN", "Exit"]

_KINDS = ("normal", "shutdown", "killed", "error")


@dataclass(frozen=True)
class Exit:
    """How a child (or a supervisor) ended.

    Attributes:
        kind: ``"normal"``, ``"shutdown"``, ``"killed"`` or ``"error"``.
        detail: more about it: the ``term`` of ``("shutdown", term)``, the
            exception, ``"exit code 3"``, ``"signal SIGSEGV"``, or why a
            supervisor gave up. None when there is nothing to add.
        code: an OS process's exit code when it exited by itself with one > 0; None
            otherwise (not part of equality: ``detail`` already says it).

    Raises:
        ValueError: `kind` is not one of the four.
    """

    kind: str
    detail: object = None
    code: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"exit kind: expected one of {', '.join(_KINDS)}, got {self.kind!r}")

    @property
    def abnormal(self) -> bool:
        """True for ``killed`` and ``error``: the exits after which a transient child restarts."""
        return self.kind in ("killed", "error")

    def __str__(self) -> str:
        if self.kind == "error":
            return self.detail if isinstance(self.detail, str) else repr(self.detail)
        if self.detail is None or self.kind == "killed":
            return self.kind
        return f"{self.kind}: {self.detail}"

    @classmethod
    def from_actor(cls, reason: object) -> "Exit":
        """Map an actor's kernel exit reason (`ActorRef.exit_reason`) onto an `Exit`.

        ``"normal"``, ``"shutdown"`` and ``"killed"`` map to their kinds,
        ``("shutdown", term)`` to ``Exit("shutdown", term)``, an `Exit` to
        itself, and anything else (an exception, another value) to ``error``.
        """
        if isinstance(reason, Exit):
            return reason
        if isinstance(reason, str) and reason in ("normal", "shutdown", "killed"):
            return _BY_KIND[reason]
        if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown":
            return cls("shutdown", reason[1])
        return cls("error", reason)

    @classmethod
    def from_returncode(cls, returncode: int, stop_requested: bool = False) -> "Exit":
        """Map a `subprocess.Popen` return code onto an `Exit`.

        Args:
            returncode: the process's return code (negative: killed by that signal).
            stop_requested: the supervisor had asked the process to stop (SIGTERM).
        """
        if returncode == 0:
            return SHUTDOWN if stop_requested else NORMAL
        if returncode > 0:
            return cls("error", f"exit code {returncode}", returncode)
        sig = -returncode
        if sig == signal.SIGKILL:
            return KILLED
        if sig == signal.SIGTERM and stop_requested:
            return SHUTDOWN
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return cls("error", f"signal {name}")


NORMAL = Exit("normal")
SHUTDOWN = Exit("shutdown")
KILLED = Exit("killed")
_BY_KIND = {"normal": NORMAL, "shutdown": SHUTDOWN, "killed": KILLED}
