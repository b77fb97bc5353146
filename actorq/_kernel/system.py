"""`ActorSystem`: owns the event loop, the actors on it, and their lifecycles.

Two ways to run one:

* inside a running asyncio program::

      async with ActorSystem() as system:
          ref = await system.spawn(Greeter)
          print(await ref.ask("hi"))

* from plain synchronous code, where the system runs its own loop (uvloop
  when installed) on a background thread::

      with ActorSystem() as system:
          ref = system.spawn_sync(Greeter)
          print(ref.ask_sync("hi"))

`start()` and `stop()` are idempotent, `stop()` before `start()` is safe, and
`stop()` returns only once every actor has stopped.

Stop order. An actor spawned while a supervisor starts one of its children
(inside `owned_by`) belongs to that supervisor. `stop()` first stops the
top-level actors, newest first; each supervisor stops the actors it owns in
its own order (reverse start order) before it finishes. Anything still
running after that is stopped newest first.

Exit signals (`exit`, OTP's ``exit/2``):

=============  ==============================================================
``"kill"``     the actor's task is cancelled at once; exit reason ``"killed"``
``"normal"``   ignored, unless an actor sends it to itself: then it stops
               with reason ``"normal"`` once the current hook returns
any other      the actor stops with that reason as soon as its current hook
               returns; messages still queued are dropped (pending asks fail
               with `ActorStopped`); ``on_stop`` runs
=============  ==============================================================

A kill interrupts whatever the actor awaits, ``on_stop`` included (which is
then cut short). Python cannot make a kill untrappable: an actor that
swallows `asyncio.CancelledError` delays its own death.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import itertools
import logging
import threading
from typing import Any, Callable, Coroutine, Iterator, TypeVar

from actorq._kernel.actor import Actor
from actorq._kernel.loop import new_event_loop
from actorq._kernel.mailbox import Envelope, Mailbox
from actorq._kernel.ref import ActorRef
from actorq.errors import ActorStopped, MailboxFull

logger = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()  # sentinel envelope payload: stop after the messages queued before it
_EXIT = object()  # sentinel envelope payload: an exit signal, put ahead of queued messages
_ids = itertools.count(1)

# The actor (a supervisor) on whose behalf actors are being spawned; see `owned_by`.
_owner: contextvars.ContextVar["_ActorCell | None"] = contextvars.ContextVar("actorq_owner", default=None)


@contextlib.contextmanager
def owned_by(ref: ActorRef) -> Iterator[None]:
    """Actors spawned inside this block (in this task, and tasks it creates) belong to `ref`.

    The owner is responsible for stopping them; `ActorSystem.stop` leaves owned
    actors to their live owner. Supervisors wrap their child starts in it.
    """
    token = _owner.set(ref._cell)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner() -> ActorRef | None:
    """The actor whose children are being started in this context, if any."""
    cell = _owner.get()
    return None if cell is None else ActorRef(cell)


def system_of(ref: ActorRef) -> "ActorSystem":
    """The `ActorSystem` that runs `ref`."""
    return ref._cell.system


def is_loop_thread(ref: ActorRef) -> bool:
    """True when called on the thread of the loop that runs `ref`."""
    return ref._cell.on_loop_thread()


def stopped_future(ref: ActorRef) -> "asyncio.Future[None]":
    """The future that `ref`'s actor resolves when it has stopped (loop thread only; await it shielded)."""
    return ref._cell.stopped


def notify(ref: ActorRef, message: Any) -> bool:
    """Queue `message` for `ref` ignoring the mailbox bound (loop thread only).

    For notifications that must not be lost to a full mailbox (a child's exit,
    a timer). Returns False, dropping the message, once the actor is stopping.
    """
    cell = ref._cell
    if cell.stopping or cell.stopped.done():
        return False
    cell.mailbox.put_control(Envelope(message, None))
    return True


def request_exit(ref: ActorRef, reason: object) -> None:
    """Make `ref` stop with `reason` once its current hook returns (no filtering of ``"normal"``)."""
    ref._cell.request_exit(reason)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class _ActorCell:
    """Kernel-side state of one actor: mailbox, task, exit reason."""

    def __init__(self, system: "ActorSystem", actor: Actor, name: str, mailbox_size: int) -> None:
        self.system = system
        self.actor = actor
        self.name = name
        self.mailbox = Mailbox(mailbox_size)
        self.loop = system.loop
        self.thread_id = system._thread_id
        self.stopped: asyncio.Future[None] = self.loop.create_future()
        self.stopping = False
        self.exiting = False  # the message loop has ended; exit_reason is final unless killed
        self.exit_reason: object = "normal"
        self.pending_exit: object = None
        self.task: asyncio.Task[None] | None = None
        self.owner: _ActorCell | None = _owner.get()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def put_from_thread(self, envelope: Envelope) -> None:
        try:
            self.mailbox.put(envelope)
        except MailboxFull as exc:
            logger.warning("actor %s: message from another thread dropped: %s", self.name, exc)
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(exc)

    def request_exit(self, reason: object) -> None:
        """Stop with `reason` once the current hook returns, ahead of queued messages."""
        if self.stopping or self.stopped.done():
            return
        self.stopping = True
        self.pending_exit = reason
        self.mailbox.put_urgent(Envelope(_EXIT, None))

    def kill(self) -> None:
        """Cancel the actor's task (exit reason ``"killed"``)."""
        if self.stopped.done():
            return
        self.stopping = True
        if self.task is not None:
            self.task.cancel()

    def _task_done(self, task: "asyncio.Task[None]") -> None:
        # Safety net: a task cancelled before its first step never enters `run`.
        if not self.stopped.done():
            self.exit_reason = "killed" if task.cancelled() else (task.exception() or "killed")
            self._finish()

    async def run(self, started: asyncio.Future[None]) -> None:
        _owner.set(None)  # what this actor spawns is its own business, not its supervisor's
        actor = self.actor
        try:
            await _maybe_await(actor.on_start())
        except BaseException as exc:  # the spawn fails; the actor never runs
            if isinstance(exc, asyncio.CancelledError):
                self.exit_reason = "killed"
                exc = ActorStopped(f"actor {self.name} was killed during on_start")
            else:
                self.exit_reason = exc
            if not started.done():
                started.set_exception(exc)
            self._finish()
            return
        started.set_result(None)
        try:
            while True:
                message, reply = await self.mailbox.get()
                if message is _STOP:
                    self.exit_reason = "shutdown"
                    break
                if message is _EXIT:
                    self.exit_reason = self.pending_exit
                    break
                if reply is None:
                    await _maybe_await(actor.on_receive(message))
                    continue
                try:
                    result = await _maybe_await(actor.on_ask(message))
                except BaseException as exc:
                    if not reply.done():
                        reply.set_exception(exc)
                    raise
                if not reply.done():
                    reply.set_result(result)
        except asyncio.CancelledError:
            self.exit_reason = "killed"
        except Exception as exc:
            logger.error("actor %s crashed: %r", self.name, exc, exc_info=exc)
            self.exit_reason = exc
        self.stopping = True
        self.exiting = True
        try:
            await _maybe_await(actor.on_stop())
        except asyncio.CancelledError:  # killed while stopping: on_stop is cut short
            self.exit_reason = "killed"
        except Exception:
            logger.exception("actor %s: on_stop failed", self.name)
        finally:
            self._finish()

    def _finish(self) -> None:
        self.stopping = True
        for envelope in self.mailbox.drain():
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(f"actor {self.name} stopped"))
        if not self.stopped.done():
            self.stopped.set_result(None)
        if self.system._cells.get(self.name) is self:
            del self.system._cells[self.name]


class ActorSystem:
    """Runs actors on one event loop and stops them cleanly.

    Args:
        name: a label used in logs and actor names.
    """

    def __init__(self, name: str = "actorq") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._cells: dict[str, _ActorCell] = {}
        self._started = False
        self._stopped = False
        # Serialises start_in_thread/shutdown when several threads call them at once (A30).
        self._lifecycle = threading.Lock()

    # -- lifecycle -----------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the actors run on. Raises RuntimeError before `start`."""
        if self._loop is None:
            raise RuntimeError("ActorSystem is not started")
        return self._loop

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._started and not self._stopped

    async def start(self) -> None:
        """Bind the system to the running loop. Idempotent."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._started = True

    def start_in_thread(self) -> None:
        """Start a private loop (uvloop when installed) on a daemon thread. Idempotent."""
        with self._lifecycle:
            if not self._started:
                self._start_thread()

    def _start_thread(self) -> None:
        loop = new_event_loop()
        ready = threading.Event()

        def _run() -> None:
            asyncio.set_event_loop(loop)
            self._thread_id = threading.get_ident()
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=_run, name=f"{self.name}-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._started = True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop every actor, newest first, and wait for each. Idempotent; safe before `start`."""
        if not self._started or self._stopped:  # before start: nothing to stop, start still works
            return
        if self._thread is not None and threading.get_ident() != self._thread_id:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.stop(timeout), self.loop))
            return
        # Top-level actors first, newest first: a supervisor stops what it owns in
        # its own order. Then anything left (owned by an actor that died), newest first.
        for name in reversed(list(self._cells)):
            cell = self._cells.get(name)
            if cell is not None and (cell.owner is None or cell.owner.stopped.done()):
                await self._stop_cell(cell, timeout)
        for name in reversed(list(self._cells)):
            cell = self._cells.get(name)
            if cell is not None:
                await self._stop_cell(cell, timeout)
        self._stopped = True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Blocking `stop` for synchronous code; also ends the background loop thread.

        Idempotent, and a no-op before `start_in_thread`.

        Raises:
            RuntimeError: called on the loop thread, or the system was started with `start`.
        """
        if self._thread_id is not None and threading.get_ident() == self._thread_id:
            raise RuntimeError("shutdown() from the loop thread would deadlock; use 'await stop()'")
        with self._lifecycle:
            if not self._started:
                return
            if self._thread is None:
                raise RuntimeError("shutdown() is for systems started with start_in_thread(); use 'await stop()'")
            if not self._stopped:
                self.call(self.stop(timeout), timeout + 5.0)
            if self._thread.is_alive():  # a second shutdown finds the loop closed already
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)

    async def __aenter__(self) -> "ActorSystem":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> "ActorSystem":
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- actors --------------------------------------------------------------
    async def spawn(
        self,
        actor: Actor | type[Actor],
        *args: Any,
        name: str | None = None,
        mailbox_size: int = 10_000,
        **kwargs: Any,
    ) -> ActorRef:
        """Start an actor and return its ref once its `on_start` has run.

        Args:
            actor: an `Actor` subclass (instantiated with ``*args, **kwargs``) or an instance.
            name: a unique name; one is made up when omitted.
            mailbox_size: the mailbox bound.

        Raises:
            ValueError: the name is taken.
            Exception: whatever the actor's `on_start` raised.
        """
        if not self.running:
            raise RuntimeError("ActorSystem is not running")
        if threading.get_ident() != self._thread_id:
            return await asyncio.wrap_future(self._submit(self.spawn(actor, *args, name=name, mailbox_size=mailbox_size, **kwargs)))
        instance = actor(*args, **kwargs) if isinstance(actor, type) else actor
        name = name or f"{type(instance).__name__}-{next(_ids)}"
        if name in self._cells:
            raise ValueError(f"an actor named {name!r} is already running")
        cell = _ActorCell(self, instance, name, mailbox_size)
        ref = ActorRef(cell)
        instance.ref = ref
        instance.system = self
        self._cells[name] = cell
        started: asyncio.Future[None] = self.loop.create_future()
        cell.task = self.loop.create_task(cell.run(started), name=f"actor:{name}")
        cell.task.add_done_callback(cell._task_done)
        await started
        return ref

    def spawn_sync(self, actor: Actor | type[Actor], *args: Any, timeout: float = 10.0, **kwargs: Any) -> ActorRef:
        """Blocking `spawn` for code running outside the loop thread."""
        return self.call(self.spawn(actor, *args, **kwargs), timeout)

    def exit(self, ref: ActorRef, reason: object) -> None:
        """Send an exit signal to `ref` (OTP's ``exit/2``); returns at once. Safe from any thread.

        Args:
            ref: the actor.
            reason: ``"kill"`` cancels the actor now (exit reason ``"killed"``);
                ``"normal"`` is ignored unless the actor sends it to itself; any
                other value stops the actor with that exit reason once its current
                hook returns, ahead of queued messages (which are dropped), after
                `on_stop`. See the module docstring.

        A stopping or stopped actor ignores every signal but ``"kill"``.
        """
        cell = ref._cell
        if not cell.on_loop_thread():
            cell.loop.call_soon_threadsafe(self.exit, ref, reason)
            return
        if isinstance(reason, str) and reason == "kill":
            cell.kill()
        elif isinstance(reason, str) and reason == "normal":
            if cell.task is not None and asyncio.current_task() is cell.task:
                cell.request_exit("normal")
        else:
            cell.request_exit(reason)

    def whereis(self, name: str) -> ActorRef | None:
        """The running actor registered under `name`, or None (OTP's ``whereis/1``).

        A supervisor that restarts a named child registers the new incarnation
        under the same name, so looking the name up again finds the new ref.
        """
        cell = self._cells.get(name)
        if cell is None or cell.stopped.done():
            return None
        return ActorRef(cell)

    async def stop_actor(self, ref: ActorRef, timeout: float = 10.0) -> object:
        """Stop one actor after the messages already in its mailbox; return its exit reason.

        If it has not stopped within `timeout`, its task is cancelled (reason ``"killed"``).
        """
        cell = ref._cell
        if not cell.stopped.done():
            await self._stop_cell(cell, timeout)
        return cell.exit_reason

    async def _stop_cell(self, cell: _ActorCell, timeout: float) -> None:
        if not cell.stopping:
            cell.stopping = True
            cell.mailbox.put_control(Envelope(_STOP, None))
        try:
            await asyncio.wait_for(asyncio.shield(cell.stopped), timeout)
        except TimeoutError:
            logger.warning("actor %s did not stop within %.1f s; cancelling it", cell.name, timeout)
            if cell.task is not None:
                cell.task.cancel()
            await asyncio.shield(cell.stopped)

    # -- helpers for synchronous callers ----------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the system's loop from another thread and return its result."""
        if threading.get_ident() == self._thread_id:
            coro.close()
            raise RuntimeError("call() from the loop thread would deadlock; await the coroutine instead")
        return self._submit(coro).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the loop; safe from any thread."""
        if threading.get_ident() == self._thread_id:
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def actors(self) -> list[ActorRef]:
        """Refs of the running actors, in spawn order."""
        return [ActorRef(c) for c in self._cells.values()]


__all__ = ["ActorSystem", "current_owner", "is_loop_thread", "notify", "owned_by", "request_exit", "stopped_future",
           "system_of"]
