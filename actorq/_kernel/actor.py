"""The `Actor` base class: user code lives only in its hooks.

The kernel owns the loop that takes one envelope at a time from the mailbox
and calls a hook. Hooks run on the actor system's event loop thread; they may
be plain functions or coroutines. A hook must not block (use
``loop.run_in_executor`` for blocking work). An exception escaping a hook
crashes the actor (OTP's "let it crash"): it is logged, the actor stops with
that exception as its exit reason, pending `ask`s fail, and whoever supervises
the actor decides what happens next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actorq._kernel.ref import ActorRef
    from actorq._kernel.system import ActorSystem


class Actor:
    """Base class for actors. Subclass it and override the hooks you need.

    Attributes set by the kernel before `on_start` runs:
        ref: this actor's own `ActorRef`.
        system: the `ActorSystem` that runs it.
    """

    ref: "ActorRef"
    system: "ActorSystem"

    def on_start(self) -> Any:
        """Called once, before the first message. Runs on the loop; may be async.

        Raising here makes the spawn fail (the actor never runs).
        """

    def on_receive(self, message: Any) -> Any:
        """Handle one message sent with `tell`. Runs on the loop; may be async.

        Raising crashes the actor.
        """

    def on_ask(self, message: Any) -> Any:
        """Handle one message sent with `ask` and return the reply. May be async.

        The default calls `on_receive` and replies with its result. Raising
        sends the exception to the asker and crashes the actor.
        """
        return self.on_receive(message)

    def on_stop(self) -> Any:
        """Called once when the actor stops, whatever the reason. May be async.

        An exception here is logged and otherwise ignored.
        """
