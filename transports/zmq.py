"""ZeroMQ sockets driven by an asyncio loop, without a future per message.

`LoopSocket` registers the socket's file descriptor with ``loop.add_reader`` and,
when it fires, drains every queued message with non-blocking receives,
handing each one to a callback. This is several times cheaper than awaiting
``recv`` per message (see SPEED.md: Python per message sets the limit).

ZeroMQ's FD is edge-triggered: it signals a change, not a level, and a send
may consume the signal for messages that arrived meanwhile. So after every
send, and after a drain that stopped at its budget, a drain is scheduled
with ``call_soon``; a drain that finds nothing costs one failed ``recv``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from typing import Callable, TypeVar

import zmq

from actorq.transports.codec import FrameError
from actorq.transports.drops import DropCounter

logger = logging.getLogger(__name__)

__all__ = ["LoopSocket", "private_ipc_dir", "DRAIN_BUDGET", "bind_router", "routed", "send_reply"]

T = TypeVar("T")

DRAIN_BUDGET = 512  # messages handled per loop callback before yielding to other callbacks


class LoopSocket:
    """A zmq socket whose incoming messages are delivered to `on_message` on `loop`.

    Args:
        loop: the event loop (the socket is used only on its thread).
        sock: a configured, bound or connected zmq socket.
        on_message: called with the list of frames of each message; it must not raise
            (an exception is counted in `handler_failures`, logged with its traceback at
            most once a second, and the message dropped).
        name: names the socket in log lines.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket,  # type: ignore[type-arg]
        on_message: Callable[[list[bytes]], None],
        name: str = "socket",
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_message = on_message
        self.name = name
        self.handler_failures = DropCounter(name, logger, event="message handler failed; message dropped")
        self._fd = sock.getsockopt(zmq.FD)
        self._scheduled = False
        self._closed = False

    def start(self) -> None:
        """Begin delivering messages."""
        self.loop.add_reader(self._fd, self._drain)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._drain)

    def drain(self) -> None:
        """Handle every message queued right now (up to the budget), on the caller's turn."""
        self._drain()

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        recv = self.sock.recv_multipart
        handle = self.on_message
        for _ in range(DRAIN_BUDGET):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                logger.warning("receive failed: %s", exc)
                return
            try:
                handle(frames)
            except Exception as exc:  # a bug in the handler: one bad peer must not flood the log with tracebacks
                self.handler_failures.drop(type(exc).__name__, exc_info=True)
        self._schedule()  # budget used up: let other callbacks run, then go on

    def send(self, frames: list[bytes]) -> None:
        """Send one message without blocking.

        Raises:
            zmq.Again: the high-water mark is reached (back-pressure).
            zmq.ZMQError: e.g. EHOSTUNREACH from a ROUTER_MANDATORY socket whose peer is gone.
        """
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        finally:
            self._schedule()

    def close(self, linger_ms: int = 0) -> None:
        """Stop delivering and close the socket. Idempotent.

        Args:
            linger_ms: how long queued outgoing messages may still be sent (0: drop them).
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.loop.remove_reader(self._fd)
        except Exception:  # the loop may already be closed
            pass
        self.sock.close(linger=linger_ms)


def bind_router(loop: asyncio.AbstractEventLoop, endpoint: str, on_message: Callable[[list[bytes]], None], *,
                name: str, max_message_bytes: int, queued_per_peer: int) -> LoopSocket:
    """A ROUTER that serves requests, bound at `endpoint` and delivering to `on_message`.

    What it holds is bounded: a frame over `max_message_bytes` disconnects its sender
    inside libzmq (MAXMSGSIZE); at most `queued_per_peer` requests wait per peer, and
    as many answers (RCVHWM, SNDHWM); nothing lingers at close (LINGER 0). The bound
    address is ``socket.sock.getsockopt_string(zmq.LAST_ENDPOINT)``.
    """
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    sock.setsockopt(zmq.RCVHWM, queued_per_peer)
    sock.setsockopt(zmq.SNDHWM, queued_per_peer)
    try:
        sock.bind(endpoint)
    except BaseException:
        sock.close()
        raise
    socket = LoopSocket(loop, sock, on_message, name=name)
    socket.start()
    return socket


def routed(frames: list[bytes], parse: Callable[[bytes], T], dropped: DropCounter) -> tuple[bytes, T] | None:
    """A ROUTER message's sender and its one frame as `parse` validates it; None once the
    message is dropped and counted (``part_count``, or the `FrameError` reason `parse` raised)."""
    if len(frames) != 2:
        dropped.drop("part_count", f"{len(frames)} parts")
        return None
    ident, frame = frames
    try:
        return ident, parse(frame)
    except FrameError as exc:
        dropped.drop(exc.reason, exc.detail)
        return None


def send_reply(socket: LoopSocket | None, ident: bytes, frame: bytes) -> None:
    """Answer peer `ident` on a ROUTER; an answer the peer cannot take (gone, or at its
    SNDHWM) is dropped, as a ROUTER does, and so is one after the socket closed (None)."""
    if socket is None:
        return
    try:
        socket.send([ident, frame])
    except zmq.ZMQError as exc:
        logger.debug("%s: answer not sent: %s", socket.name, exc)


def private_ipc_dir(prefix: str = "actorq-") -> str:
    """Create a fresh directory, mode 0700, for this process's ipc:// sockets.

    The directory holds an ``owner.pid`` file. Directories with the same prefix
    left behind by processes that died without cleaning up (SIGKILL) are
    removed first, so they do not pile up in the temporary directory.
    """
    sweep_stale_ipc_dirs(prefix)
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o700)
    with open(os.path.join(path, "owner.pid"), "w") as f:
        f.write(str(os.getpid()))
    return path


def sweep_stale_ipc_dirs(prefix: str = "actorq-") -> int:
    """Remove this user's ipc directories whose owning process is gone; return how many."""
    import psutil  # here, not at the top: worker processes never sweep, and skip loading it

    root = tempfile.gettempdir()
    removed = 0
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if not name.startswith(prefix):
            continue
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, "owner.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue  # not ours, or made by another tool: leave it alone
        if pid != os.getpid() and not psutil.pid_exists(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
