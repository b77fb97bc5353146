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
`stop()` returns only once every actor has stopped (in reverse spawn order).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import logging
import threading
from typing import Any, Callable, Coroutine, TypeVar

from actorq._kernel.actor import Actor
from actorq._kernel.loop import new_event_loop
from actorq._kernel.mailbox import Envelope, Mailbox
from actorq._kernel.ref import ActorRef
from actorq.errors import ActorStopped, MailboxFull

logger = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()  # sentinel envelope payload: stop after the messages queued before it
_ids = itertools.count(1)


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
        self.exit_reason: BaseException | str = "normal"
        self.task: asyncio.Task[None] | None = None

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def put_from_thread(self, envelope: Envelope) -> None:
        try:
            self.mailbox.put(envelope)
        except MailboxFull as exc:
            logger.warning("actor %s: message from another thread dropped: %s", self.name, exc)
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(exc)

    async def run(self, started: asyncio.Future[None]) -> None:
        actor = self.actor
        try:
            await _maybe_await(actor.on_start())
        except BaseException as exc:  # the spawn fails; the actor never runs
            self.exit_reason = exc
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
        try:
            await _maybe_await(actor.on_stop())
        except Exception:
            logger.exception("actor %s: on_stop failed", self.name)
        self._finish()

    def _finish(self) -> None:
        self.stopping = True
        for envelope in self.mailbox.drain():
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(ActorStopped(f"actor {self.name} stopped"))
        if not self.stopped.done():
            self.stopped.set_result(None)
        self.system._cells.pop(self.name, None)


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
        await started
        return ref

    def spawn_sync(self, actor: Actor | type[Actor], *args: Any, timeout: float = 10.0, **kwargs: Any) -> ActorRef:
        """Blocking `spawn` for code running outside the loop thread."""
        return self.call(self.spawn(actor, *args, **kwargs), timeout)

    async def stop_actor(self, ref: ActorRef, timeout: float = 10.0) -> BaseException | str:
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


__all__ = ["ActorSystem"]
