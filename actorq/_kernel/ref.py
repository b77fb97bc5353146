"""`ActorRef`: the only handle user code holds on an actor.

`tell` queues a message and returns at once (no round trip). `ask` queues a
message with a reply future and waits for the reply or the timeout: it never
hangs. Both are safe from any thread; from outside the loop thread, use
`ask_sync`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Callable

from actorq._kernel.mailbox import Envelope
from actorq.errors import ActorStopped, AskTimeout

if TYPE_CHECKING:
    from actorq._kernel.system import _ActorCell


class ActorRef:
    """A reference to a running (or stopped) actor.

    Refs compare equal when they point at the same actor incarnation.
    """

    __slots__ = ("_cell", "name")

    def __init__(self, cell: "_ActorCell") -> None:
        self._cell = cell
        self.name = cell.name

    def __repr__(self) -> str:
        state = "alive" if self.is_alive else "stopped"
        return f"<ActorRef {self.name} {state}>"

    # One cell per incarnation, so comparing cells compares incarnations.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActorRef):
            return NotImplemented
        return self._cell is other._cell

    def __hash__(self) -> int:
        return id(self._cell)

    @property
    def is_alive(self) -> bool:
        """True until the actor has stopped."""
        return not self._cell.stopped.done()

    @property
    def exit_reason(self) -> object:
        """Why the actor stopped: ``None`` while it runs.

        From the moment its message loop ends (before `on_stop` runs):
        ``"shutdown"`` (stopped on request), ``"killed"``, the exception it
        crashed with, or the reason given to `ActorSystem.exit` (``"normal"``
        when it exited by itself). A kill during `on_stop` turns it into
        ``"killed"``.
        """
        cell = self._cell
        if not (cell.stopped.done() or cell.exiting):
            return None
        return cell.exit_reason

    def monitor(self, callback: Callable[[object], None]) -> None:
        """Call ``callback(exit_reason)`` on the loop once the actor has stopped (OTP's monitor).

        If it has stopped already, the callback is scheduled at once. Runs on the
        loop thread; call this method from the loop thread. An exception in the
        callback is logged by the loop and otherwise ignored.
        """
        cell = self._cell
        cell.stopped.add_done_callback(lambda _: callback(cell.exit_reason))

    def tell(self, message: Any) -> None:
        """Send `message` without waiting for it to be handled.

        Raises:
            MailboxFull: the mailbox is at capacity (only detected on the loop thread;
                from other threads the message is queued or dropped with a log line).
            ActorStopped: the actor has stopped.
        """
        cell = self._cell
        if cell.stopped.done() or cell.stopping:
            raise ActorStopped(f"actor {self.name} has stopped")
        if cell.on_loop_thread():
            cell.mailbox.put(Envelope(message, None))
        else:
            cell.loop.call_soon_threadsafe(cell.put_from_thread, Envelope(message, None))

    async def ask(self, message: Any, timeout: float = 5.0) -> Any:
        """Send `message` and wait for the actor's reply.

        Args:
            message: anything the actor's `on_ask` understands.
            timeout: seconds to wait for the reply.

        Returns:
            What the actor's `on_ask` returned.

        Raises:
            AskTimeout: no reply within `timeout` (the actor may be busy or dead).
            ActorStopped: the actor stopped before replying.
            Exception: whatever `on_ask` raised.
        """
        cell = self._cell
        if cell.stopped.done() or cell.stopping:
            raise ActorStopped(f"actor {self.name} has stopped")
        if not cell.on_loop_thread():
            fut = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self.ask(message, timeout), cell.loop)
            )
            return await fut
        reply: asyncio.Future[Any] = cell.loop.create_future()
        cell.mailbox.put(Envelope(message, reply))
        try:
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise AskTimeout(f"no reply from {self.name} within {timeout} s") from None

    def ask_sync(self, message: Any, timeout: float = 5.0) -> Any:
        """Blocking `ask` for plain synchronous code running outside the loop thread.

        Raises:
            RuntimeError: called on the actor system's own loop thread (it would deadlock).
            AskTimeout, ActorStopped, Exception: as `ask`.
        """
        cell = self._cell
        if threading.get_ident() == cell.thread_id:
            raise RuntimeError("ask_sync called on the actor system's loop thread; use 'await ref.ask(...)'")
        fut = asyncio.run_coroutine_threadsafe(self.ask(message, timeout), cell.loop)
        try:
            return fut.result(timeout + 1.0)
        except TimeoutError:
            fut.cancel()
            raise AskTimeout(f"no reply from {self.name} within {timeout} s") from None

    async def wait_stopped(self) -> object:
        """Wait until the actor stops; return its exit reason (see `exit_reason`)."""
        await asyncio.shield(self._cell.stopped)
        return self._cell.exit_reason
