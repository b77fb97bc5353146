"""A running node's control endpoint, and how the ``actorq`` command finds it.

A node binds a ZeroMQ ROUTER socket at ``ipc://<private 0700 dir>/control``
and writes a small *node file* beside its SQLite journal (``<journal>.node``,
mode 0600) naming its pid and that endpoint; it removes the file when it
stops. ``actorq tree`` reads the file, sends one request and prints the reply.

Requests and replies are codec frames (msgpack, no pickle); the only request
today is ``TREE`` (body ``None``), answered with the live supervision tree as
nested maps (see `Node.tree`). A malformed request is dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import zmq

from actorq.transports.codec import FrameError, decode, encode
from actorq.transports.zmq import LoopSocket

logger = logging.getLogger(__name__)

__all__ = ["ControlServer", "NodeNotRunning", "query", "read_node_file"]

# Control request kinds, each answered with the same kind. Stable across releases.
TREE = "tree"  # request: None; reply: the live supervision tree as nested maps
KINDS = frozenset({TREE})

MAX_FRAME = 1 << 20  # requests carry nothing; a reply is one supervision tree


class NodeNotRunning(Exception):
    """No live node answers for this journal."""


class ControlServer:
    """Answers control requests on a ROUTER socket on the node's loop.

    Args:
        loop: the node's loop.
        endpoint: where to bind (an ``ipc://`` path in the node's private directory).
        handlers: ``{kind: async fn(body) -> reply body}``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str,
                 handlers: dict[str, Callable[[Any], Awaitable[Any]]]) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.handlers = handlers
        self.malformed = 0
        self._socket: LoopSocket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Bind and serve. Idempotent."""
        if self._socket is not None:
            return
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        sock.bind(self.endpoint)
        self._socket = LoopSocket(self.loop, sock, self._on_message)
        self._socket.start()

    def close(self) -> None:
        """Stop serving. Idempotent."""
        for task in self._tasks:
            task.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise FrameError("part_count")
            kind, body = decode(frames[1], MAX_FRAME, kinds=KINDS)
            handler = self.handlers.get(kind)
            if handler is None:
                raise FrameError("unexpected_kind", kind)
        except FrameError as exc:
            self.malformed += 1
            logger.warning("control: dropped a malformed request (%s)", exc)
            return
        task = self.loop.create_task(self._answer(frames[0], kind, handler, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, ident: bytes, kind: str, handler: Callable[[Any], Awaitable[Any]], body: Any) -> None:
        try:
            reply = await handler(body)
        except Exception as exc:  # a failed query must not take the node down
            logger.exception("control: %s request failed", kind)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        if self._socket is not None:
            try:
                self._socket.send([ident, encode(kind, reply)])
            except zmq.ZMQError as exc:
                logger.debug("control: reply not sent: %s", exc)


def write_node_file(path: Path, info: dict[str, Any]) -> None:
    """Write the node file atomically with mode 0600."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fp:
        json.dump(info, fp)
    os.replace(tmp, path)


def read_node_file(path: Path) -> dict[str, Any]:
    """Read a node file; raise `NodeNotRunning` when it is missing or its process is gone."""
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise NodeNotRunning(f"no node is running on this journal ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise NodeNotRunning(f"cannot read {path}: {exc}") from None
    pid = info.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise NodeNotRunning(f"the node that wrote {path} (pid {pid}) is not running")
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def query(endpoint: str, kind: str, body: Any = None, timeout: float = 5.0) -> Any:
    """Send one control request and return the reply body (blocking).

    Raises:
        NodeNotRunning: no reply within `timeout` seconds.
    """
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(encode(kind, body))
        if not sock.poll(int(timeout * 1000)):
            raise NodeNotRunning(f"no answer from the node's control endpoint {endpoint} within {timeout:g} s")
        reply_kind, reply = decode(sock.recv(), MAX_FRAME, kinds=KINDS)
        if reply_kind != kind:
            raise NodeNotRunning(f"unexpected reply {reply_kind!r} from {endpoint}")
        return reply
    finally:
        sock.close()

