"""Actors in their own OS process, behind a ref of the same kind as a local one.

`actor_process("myapp.actors:Resizer", ...)` is a supervisor start function
(like `actor_start`) that runs the actor in a child process of its own. The
child's `ref` is a `RemoteRef`: an `ActorRef` whose ``tell``, ``ask`` and
``ask_sync`` cross a ZeroMQ socket, so code that talks to the actor does not
change when it moves out of the node's process. The supervisor watches the
process like any process child (pidfd, exit reasons, ``PR_SET_PDEATHSIG``).

::

    parent (the supervisor's loop)                        child process
    ──────────────────────────────                        ─────────────
    hub: ROUTER ipc://<private 0700 dir>/actors  ◀──────── DEALER (routing id = incarnation)
                                                 ◀── AHELLO        (the actor's on_start returned)
      ref.tell(msg)  ──── ATELL msg ─────────────────▶  local ref.tell(msg)
      ref.ask(msg)   ──── AASK [n, msg] ─────────────▶  await local ref.ask(msg)
                     ◀─── AREPLY [n, ok, value | error text]

Messages, replies and the actor's constructor arguments are plain data:
msgpack for messages (no pickle: nothing on the wire can run code), JSON for
the arguments on the child's command line. The actor class is named as
``"module:Class"`` and imported in the child, like task modules: trusted
configuration, never a name taken from the wire.

Exit reasons are the process's: the child exits 0 when asked to stop
(SIGTERM, ``shutdown``) and 1 when its actor crashed (abnormal); a SIGKILL is
``killed``. When the process has exited, pending asks fail with
`ActorStopped` and further tells raise it.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from typing import Any, Callable

import zmq

from actorq._kernel.ref import ActorRef
from actorq.errors import ActorQError, ActorStopped, AskTimeout
from actorq.supervisors.child import ProcessChild, process_start
from actorq.supervisors.spec import StartFn
from actorq.transports.codec import FrameError, decode, encode
from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES
from actorq.transports.zmq import LoopSocket, private_ipc_dir

logger = logging.getLogger(__name__)

__all__ = ["RemoteError", "RemoteRef", "actor_process"]

# Wire kinds between a supervisor's hub and an actor in its own process. Stable across releases.
AHELLO = "ahello"  # child -> hub, None: the actor has started
ATELL = "atell"  # hub -> child: the message
AASK = "aask"  # hub -> child: [number, message]
AREPLY = "areply"  # child -> hub: [number, ok, reply or "Type: message"]
KINDS = frozenset({AHELLO, ATELL, AASK, AREPLY})

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
MAX_FRAME = DEFAULT_MAX_FRAME_BYTES


class RemoteError(ActorQError):
    """The remote actor's ``on_ask`` raised; the text is ``"Type: message"`` from the child."""


class RemoteRef(ActorRef):
    """A ref to an actor running in another process; the same interface as `ActorRef`.

    Refs compare equal when they point at the same process incarnation.
    """

    __slots__ = ("_hub", "_ident", "_child", "_loop")

    def __init__(self, hub: "_Hub", ident: bytes, name: str, child: ProcessChild) -> None:  # noqa: D107
        self._cell = object()  # identity of this incarnation, for __eq__ / __hash__
        self.name = name
        self._hub = hub
        self._ident = ident
        self._child = child
        self._loop = hub.loop

    def __repr__(self) -> str:
        return f"<RemoteRef {self.name} pid {self._child.pid} {'alive' if self.is_alive else 'stopped'}>"

    @property
    def is_alive(self) -> bool:
        """True until the process has exited."""
        return not self._child.exited.done()

    @property
    def exit_reason(self) -> BaseException | str | None:
        """``None`` while alive; then the process's exit reason as text."""
        return str(self._child.exited.result()) if self._child.exited.done() else None

    @property
    def pid(self) -> int:
        """The OS pid of the process running the actor."""
        return self._child.pid

    def tell(self, message: Any) -> None:
        """Send `message` (plain data) without waiting. Safe from any thread.

        Raises:
            ActorStopped: the process has exited.
            TypeError: the message cannot be encoded with msgpack.
        """
        if not self.is_alive:
            raise ActorStopped(f"actor {self.name} has stopped")
        payload = encode(ATELL, message)
        if threading.get_ident() == self._hub.thread_id:
            self._hub.send(self._ident, payload)
        else:
            self._loop.call_soon_threadsafe(self._hub.send, self._ident, payload)

    async def ask(self, message: Any, timeout: float = 5.0) -> Any:
        """Send `message` and wait for the remote actor's reply (never hangs).

        Raises:
            AskTimeout: no reply within `timeout` seconds.
            ActorStopped: the process exited before replying.
            RemoteError: the remote ``on_ask`` raised (the actor then crashes, as a local one would).
        """
        if threading.get_ident() != self._hub.thread_id:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.ask(message, timeout), self._loop))
        if not self.is_alive:
            raise ActorStopped(f"actor {self.name} has stopped")
        number, reply = self._hub.expect_reply(self._ident)
        try:
            self._hub.send(self._ident, encode(AASK, [number, message]))
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise AskTimeout(f"no reply from {self.name} within {timeout} s") from None
        finally:
            self._hub.forget_reply(self._ident, number)

    def ask_sync(self, message: Any, timeout: float = 5.0) -> Any:
        """Blocking `ask` for code running outside the loop thread."""
        if threading.get_ident() == self._hub.thread_id:
            raise RuntimeError("ask_sync called on the actor system's loop thread; use 'await ref.ask(...)'")
        fut = asyncio.run_coroutine_threadsafe(self.ask(message, timeout), self._loop)
        return fut.result(timeout + 1.0)

    def monitor(self, callback: Callable[[object], None]) -> None:
        """Call ``callback(exit_reason)`` on the loop once the process has exited (OTP's monitor).

        The reason is the process's exit reason as text, as `exit_reason` gives
        it. If the process has exited already, the callback is scheduled at
        once. Runs on the loop thread; call this method from the loop thread.
        An exception in the callback is logged by the loop and otherwise ignored.
        """
        self._child.exited.add_done_callback(lambda exited: callback(str(exited.result())))

    async def wait_stopped(self) -> BaseException | str:
        """Wait until the process has exited; return its exit reason as text."""
        return str(await asyncio.shield(self._child.exited))


class _Hub:
    """One ROUTER socket per event loop that talks to every remote actor started on it."""

    _by_loop: dict[asyncio.AbstractEventLoop, "_Hub"] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread_id = threading.get_ident()
        self.dir = private_ipc_dir("actorq-actors-")
        self.endpoint = f"ipc://{self.dir}/actors"
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind(self.endpoint)
        self.socket = LoopSocket(loop, sock, self._on_message)
        self.socket.start()
        self.hellos: dict[bytes, asyncio.Future[None]] = {}
        self.replies: dict[tuple[bytes, int], asyncio.Future[Any]] = {}
        self.numbers = itertools.count(1)
        self.children = 0
        self.malformed = 0

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> "_Hub":
        hub = cls._by_loop.get(loop)
        if hub is None:
            hub = cls._by_loop[loop] = cls(loop)
        return hub

    def send(self, ident: bytes, payload: bytes) -> None:
        try:
            self.socket.send([ident, payload])
        except zmq.ZMQError as exc:  # the peer is gone; its exit will be seen through its pidfd
            logger.debug("remote actor %s unreachable: %s", ident, exc)

    def expect_reply(self, ident: bytes) -> tuple[int, asyncio.Future[Any]]:
        number = next(self.numbers)
        fut = self.loop.create_future()
        self.replies[(ident, number)] = fut
        return number, fut

    def forget_reply(self, ident: bytes, number: int) -> None:
        self.replies.pop((ident, number), None)

    def child_exited(self, ident: bytes, name: str) -> None:
        for key in [k for k in self.replies if k[0] == ident]:
            fut = self.replies.pop(key)
            if not fut.done():
                fut.set_exception(ActorStopped(f"actor {name} stopped before replying"))
        self.children -= 1
        if self.children == 0:
            self.close()

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if _Hub._by_loop.get(self.loop) is self:
            del _Hub._by_loop[self.loop]

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise FrameError("part_count")
            kind, body = decode(frames[1], MAX_FRAME, kinds=KINDS)
            ident = frames[0]
            if kind == AHELLO:
                waiter = self.hellos.pop(ident, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind == AREPLY:
                if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], int)):
                    raise FrameError("bad_body", "reply")
                fut = self.replies.pop((ident, body[0]), None)
                if fut is not None and not fut.done():
                    if body[1] is True:
                        fut.set_result(body[2])
                    else:
                        fut.set_exception(RemoteError(str(body[2])))
            else:
                raise FrameError("unexpected_kind", kind)
        except FrameError as exc:
            self.malformed += 1
            logger.warning("remote actors: dropped a malformed frame (%s)", exc)


def actor_process(target: str, *args: Any, name: str | None = None, ready_timeout: float = 60.0,
                  env: dict[str, str] | None = None, **kwargs: Any) -> StartFn:
    """A supervisor start function that runs actor `target` in its own OS process.

    Args:
        target: ``"module:Class"`` of an `Actor` subclass, importable in the child
            (the child's ``sys.path`` is the parent's).
        args, kwargs: the actor's constructor arguments (JSON values).
        name: the ref's name (default: the class name and the pid).
        ready_timeout: seconds to wait for the actor's ``on_start`` in the child.
        env: the child's environment (default: inherited).

    Returns:
        An async start function returning a `ProcessChild` whose ``ref`` is a `RemoteRef`.

    Raises:
        ValueError: `target` is not ``"module:Class"``, or the arguments are not JSON values.
    """
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ValueError(f"actor_process: target: expected 'module:Class', got {target!r}")
    try:
        arguments = json.dumps([list(args), kwargs])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"actor_process {target}: constructor arguments must be JSON values: {exc}") from None
    class_name = target.rpartition(":")[2]

    async def start(*_start_args: Any) -> ProcessChild:
        loop = asyncio.get_running_loop()
        hub = _Hub.for_loop(loop)
        ident = secrets.token_hex(8).encode()
        spec = {"endpoint": hub.endpoint, "ident": ident.decode(), "target": target, "args": arguments,
                "sys_path": [p for p in sys.path if p]}
        hello = hub.hellos[ident] = loop.create_future()
        hub.children += 1
        try:
            child = await process_start([sys.executable, "-c", _BOOT, json.dumps(spec)], env=env)()
        except BaseException:
            hub.hellos.pop(ident, None)
            hub.child_exited(ident, target)
            raise
        ref_name = name or f"{class_name}:{child.pid}"
        child.exited.add_done_callback(lambda _: hub.child_exited(ident, ref_name))
        done, _ = await asyncio.wait([hello, asyncio.shield(child.exited)], timeout=ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if hello not in done:
            hub.hellos.pop(ident, None)
            hello.cancel()
            if not child.exited.done():
                child.kill()
                await asyncio.shield(child.exited)
                raise ActorQError(f"actor {target} did not start within {ready_timeout:g} s")
            raise ActorQError(f"actor {target} failed to start: its process exited ({child.exited.result()})")
        child.ref = RemoteRef(hub, ident, ref_name, child)
        child.name = ref_name
        return child

    start.__qualname__ = f"actor_process({target!r})"
    return start


# -- the child process ------------------------------------------------------------------------
def _child_main() -> int:
    from actorq._kernel.loop import new_event_loop

    spec = json.loads(sys.argv[1])
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s %(levelname)s actor[{os.getpid()}] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_child(spec))


async def _child(spec: dict[str, Any]) -> int:
    from actorq._kernel.system import ActorSystem

    module, _, qualname = spec["target"].partition(":")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    args, kwargs = json.loads(spec["args"])
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    async with ActorSystem(f"actor-{os.getpid()}") as system:
        ref = await system.spawn(cls, *args, **kwargs)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, spec["ident"].encode())
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        sock.connect(spec["endpoint"])
        tasks: set[asyncio.Task[None]] = set()

        async def answer(number: int, message: Any) -> None:
            try:
                reply = [number, True, await ref.ask(message, timeout=86400.0)]
            except Exception as exc:
                reply = [number, False, f"{type(exc).__name__}: {exc}"]
            try:
                channel.send([encode(AREPLY, reply)])
            except (zmq.ZMQError, TypeError, ValueError) as exc:
                channel.send([encode(AREPLY, [number, False, f"reply not sent: {exc}"])])

        def on_message(frames: list[bytes]) -> None:
            try:
                kind, body = decode(frames[0], MAX_FRAME, kinds=KINDS)
                if kind == ATELL:
                    ref.tell(body)
                elif kind == AASK and isinstance(body, list) and len(body) == 2:
                    task = loop.create_task(answer(body[0], body[1]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    raise FrameError("unexpected_kind", str(kind))
            except (FrameError, ActorStopped) as exc:
                logger.warning("dropped a message: %s", exc)

        channel = LoopSocket(loop, sock, on_message)
        channel.start()
        channel.send([encode(AHELLO, None)])
        stopped = asyncio.ensure_future(ref.wait_stopped())
        await asyncio.wait([stop, stopped], return_when=asyncio.FIRST_COMPLETED)
        crashed = stopped.done() and not stop.done()
        if not crashed:
            await system.stop_actor(ref)
        channel.close(linger_ms=1000)
        ctx.term()
    return 1 if crashed else 0


_BOOT = "import sys; from actorq.supervisors.remote import _child_main; sys.exit(_child_main())"
