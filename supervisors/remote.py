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

Both ends validate every frame before using it: one part (the hub's ROUTER
adds the child's routing id), at most `MAX_FRAME` bytes (MAXMSGSIZE: a larger
frame disconnects its sender inside libzmq), a known kind for that direction,
the body's shape, and a message or reply value nested at most `MAX_DEPTH` deep
(messages are user data: the depth is the one bound their content gets). A
frame that fails is dropped and counted by reason, with at most one log line
a second; ``await ref.dropped()`` returns the child's counts. A sender refuses
what its peer would drop: a message too deep or too large raises `ValueError`
at ``tell``/``ask``. What each end holds is bounded: the hub queues at most
`QUEUED_PER_CHILD` messages for a child (a tell past that raises
`MailboxFull`, as a full local mailbox does), each socket takes at most
`RECEIVED_PER_PEER` frames from its peer before its loop reads them, a child's
loop moves them to the actor's mailbox (a message that finds it full is
dropped and counted), and asks in flight in the child are bounded by that
mailbox.
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
from actorq.errors import ActorQError, ActorStopped, AskTimeout, MailboxFull
from actorq.supervisors.child import ProcessChild, process_start
from actorq.supervisors.spec import StartFn
from actorq.transports.codec import FrameError, check_depth, decode, describe, encode
from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES
from actorq.transports.drops import DropCounter
from actorq.transports.zmq import LoopSocket, private_ipc_dir, routed

logger = logging.getLogger(__name__)

__all__ = ["RemoteError", "RemoteRef", "actor_process"]

# Wire kinds between a supervisor's hub and an actor in its own process. Stable across releases.
AHELLO = "ahello"  # child -> hub, None: the actor has started
ATELL = "atell"  # hub -> child: the message
AASK = "aask"  # hub -> child: [number, message]
ADROPS = "adrops"  # hub -> child: number; answered with AREPLY [number, True, {reason: count}]
AREPLY = "areply"  # child -> hub: [number, ok, reply or "Type: message"]
TO_HUB = frozenset({AHELLO, AREPLY})
TO_CHILD = frozenset({ATELL, AASK, ADROPS})
KINDS = TO_HUB | TO_CHILD

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
MAX_FRAME = DEFAULT_MAX_FRAME_BYTES  # a message is user data: the frame size every socket of actorq allows
MAX_DEPTH = 64  # how deep a message or reply may nest: plenty for data, far from msgpack's 1,024 and repr's limit
MAX_NUMBER = 2**63 - 1  # ask numbers count up from 1
MAX_ERROR_TEXT = 64 << 10  # characters of a remote error's text that are sent
# Messages a sender queues for its peer (SNDHWM): the hub's tells and asks for one child, a
# child's replies. The sender's own messages, in its own memory: a tell past the bound raises
# MailboxFull, as a local mailbox (10,000) does; 1,000 is slack for bursts, not a store.
QUEUED_PER_CHILD = 1000
# Frames a socket takes from its peer before its loop reads them (RCVHWM): each loop reads
# as they come (a child moves them to its actor's mailbox), so a few suffice, and a peer that
# floods makes the other end hold at most 16 frames of at most MAX_FRAME in libzmq.
RECEIVED_PER_PEER = 16


def _number(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_NUMBER


def parse_to_hub(frame: bytes) -> tuple[str, Any]:
    """Validate one frame a child sent to the hub; return ``(kind, body)``.

    Raises:
        FrameError: not a valid envelope of a child's kind, an AHELLO with a body,
            or an AREPLY that is not ``[number, True, value nested at most MAX_DEPTH]``
            or ``[number, False, text]`` (reason ``bad_body``, or ``too_deep``).
    """
    kind, body = decode(frame, MAX_FRAME, kinds=TO_HUB)
    if kind == AHELLO:
        if body is not None:
            raise FrameError("bad_body", f"hello: expected no body, got {describe(body)}")
    elif not (type(body) is list and len(body) == 3 and _number(body[0]) and type(body[1]) is bool
              and (body[1] or type(body[2]) is str)):
        raise FrameError("bad_body", f"reply: expected [number, ok, value], got {describe(body)}")
    else:
        check_depth(body[2], MAX_DEPTH)
    return kind, body


def parse_to_child(frame: bytes) -> tuple[str, Any]:
    """Validate one frame the hub sent to a child; return ``(kind, body)``.

    Raises:
        FrameError: not a valid envelope of a hub's kind, an AASK that is not
            ``[number, message]``, an ADROPS that is not a number (reason ``bad_body``),
            or a message nested deeper than `MAX_DEPTH` (reason ``too_deep``).
    """
    kind, body = decode(frame, MAX_FRAME, kinds=TO_CHILD)
    if kind == ATELL:
        check_depth(body, MAX_DEPTH)
    elif kind == AASK:
        if not (type(body) is list and len(body) == 2 and _number(body[0])):
            raise FrameError("bad_body", f"ask: expected [number, message], got {describe(body)}")
        check_depth(body[1], MAX_DEPTH)
    elif not _number(body):
        raise FrameError("bad_body", f"drops: expected a number, got {describe(body)}")
    return kind, body


def _frame(kind: str, body: Any, message: Any, whose: str) -> bytes:
    """Encode a frame the peer will accept, or raise at the sender: TypeError, ValueError."""
    try:
        check_depth(message, MAX_DEPTH)
    except FrameError as exc:
        raise ValueError(f"{whose}: the message is {exc.detail}") from None
    frame = encode(kind, body)
    if len(frame) > MAX_FRAME:
        raise ValueError(f"{whose}: the message takes {len(frame)} bytes, more than {MAX_FRAME}")
    return frame


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
            MailboxFull: `QUEUED_PER_CHILD` messages wait for the process already (only
                detected on the loop thread; from other threads the message is dropped with
                a log line).
            TypeError: the message cannot be encoded with msgpack.
            ValueError: the message nests deeper than `MAX_DEPTH` or its frame exceeds
                `MAX_FRAME` bytes (the process would drop it).
        """
        if not self.is_alive:
            raise ActorStopped(f"actor {self.name} has stopped")
        payload = _frame(ATELL, message, message, f"actor {self.name}")
        if threading.get_ident() == self._hub.thread_id:
            self._hub.send(self._ident, payload, self.name)
        else:
            self._loop.call_soon_threadsafe(self._hub.send_from_thread, self._ident, payload, self.name)

    async def ask(self, message: Any, timeout: float = 5.0) -> Any:
        """Send `message` and wait for the remote actor's reply (never hangs).

        Raises:
            AskTimeout: no reply within `timeout` seconds.
            ActorStopped: the process exited before replying.
            RemoteError: the remote ``on_ask`` raised (the actor then crashes, as a local one would).
            MailboxFull, TypeError, ValueError: as for `tell`.
        """
        if threading.get_ident() != self._hub.thread_id:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.ask(message, timeout), self._loop))
        return await self._request(AASK, lambda number: _frame(AASK, [number, message], message,
                                                               f"actor {self.name}"), timeout)

    async def dropped(self, timeout: float = 5.0) -> dict[str, int]:
        """The frames the actor's process dropped so far, by reason (its socket's counter).

        Call it on the loop thread.

        Raises:
            AskTimeout: no reply within `timeout` seconds.
            ActorStopped: the process has exited.
        """
        counts = await self._request(ADROPS, lambda number: encode(ADROPS, number), timeout)
        if not (type(counts) is dict and all(type(n) is int for n in counts.values())):
            raise RemoteError(f"actor {self.name}: drop counts expected, got {describe(counts)}")
        return counts

    async def _request(self, kind: str, frame: Callable[[int], bytes], timeout: float) -> Any:
        if not self.is_alive:
            raise ActorStopped(f"actor {self.name} has stopped")
        number, reply = self._hub.expect_reply(self._ident)
        try:
            self._hub.send(self._ident, frame(number), self.name)
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
        sock.setsockopt(zmq.RCVHWM, RECEIVED_PER_PEER)
        sock.setsockopt(zmq.SNDHWM, QUEUED_PER_CHILD)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full or gone child is an error, not a silent drop
        sock.bind(self.endpoint)
        self.socket = LoopSocket(loop, sock, self._on_message, name="remote actors")
        self.socket.start()
        self.hellos: dict[bytes, asyncio.Future[None]] = {}
        self.replies: dict[tuple[bytes, int], asyncio.Future[Any]] = {}
        self.numbers = itertools.count(1)
        self.children = 0
        self.dropped = DropCounter("remote actors", logger)
        self.unsent = DropCounter("remote actors", logger, event="a tell from another thread was not sent")

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> "_Hub":
        hub = cls._by_loop.get(loop)
        if hub is None:
            hub = cls._by_loop[loop] = cls(loop)
        return hub

    def send(self, ident: bytes, payload: bytes, name: str) -> None:
        """Send to one child; raise `MailboxFull` when its queue is at `QUEUED_PER_CHILD`."""
        try:
            self.socket.send([ident, payload])
        except zmq.Again:
            raise MailboxFull(f"actor {name}: {QUEUED_PER_CHILD} messages wait for its process") from None
        except zmq.ZMQError as exc:  # the peer is gone; its exit will be seen through its pidfd
            logger.debug("remote actor %s unreachable: %s", name, exc)

    def send_from_thread(self, ident: bytes, payload: bytes, name: str) -> None:
        """`send` for a tell made on another thread: a full queue drops the message, counted."""
        try:
            self.send(ident, payload, name)
        except MailboxFull as exc:
            self.unsent.drop("mailbox_full", str(exc))

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
        message = routed(frames, parse_to_hub, self.dropped)
        if message is None:
            return
        ident, (kind, body) = message
        if kind == AHELLO:
            waiter = self.hellos.pop(ident, None)
            if waiter is None or waiter.done():  # a stranger, or a child that said hello before
                self.dropped.drop("unexpected_hello", f"from {ident[:16].hex()}")
                return
            waiter.set_result(None)
            return
        fut = self.replies.pop((ident, body[0]), None)
        if fut is None or fut.done():  # a late reply (the ask timed out), or a stranger's
            self.dropped.drop("unexpected_reply", f"number {body[0]} from {ident[:16].hex()}")
            return
        if body[1]:
            fut.set_result(body[2])
        else:
            fut.set_exception(RemoteError(body[2][:MAX_ERROR_TEXT]))


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
        sock.setsockopt(zmq.RCVHWM, RECEIVED_PER_PEER)
        sock.setsockopt(zmq.SNDHWM, QUEUED_PER_CHILD)
        sock.connect(spec["endpoint"])
        tasks: set[asyncio.Task[None]] = set()  # asks in flight: bounded by the actor's mailbox
        dropped = DropCounter("remote actor", logger)

        def reply_frame(number: int, value: Any) -> bytes:
            try:
                return _frame(AREPLY, [number, True, value], value, "reply")
            except (TypeError, ValueError) as exc:
                return error_frame(number, f"reply not sent: {type(exc).__name__}: {exc}")

        def error_frame(number: int, text: str) -> bytes:
            return encode(AREPLY, [number, False, text[:MAX_ERROR_TEXT]])

        def send(frame: bytes) -> None:
            try:
                channel.send([frame])
            except zmq.ZMQError as exc:  # the hub does not read (SNDHWM) or is gone: its ask times out
                dropped.drop("reply_not_sent", str(exc))

        async def answer(number: int, message: Any) -> None:
            try:
                value = await ref.ask(message, timeout=86400.0)
            except Exception as exc:
                send(error_frame(number, f"{type(exc).__name__}: {exc}"))
                return
            send(reply_frame(number, value))

        def on_message(frames: list[bytes]) -> None:
            if len(frames) != 1:
                dropped.drop("part_count", f"{len(frames)} parts")
                return
            try:
                kind, body = parse_to_child(frames[0])
            except FrameError as exc:
                dropped.drop(exc.reason, exc.detail)
                return
            if kind == ATELL:
                try:
                    ref.tell(body)
                except (MailboxFull, ActorStopped) as exc:
                    dropped.drop("mailbox_full" if isinstance(exc, MailboxFull) else "stopped", str(exc))
            elif kind == AASK:
                task = loop.create_task(answer(body[0], body[1]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                send(encode(AREPLY, [body, True, dict(dropped.by_reason)]))

        channel = LoopSocket(loop, sock, on_message, name="remote actor")
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
