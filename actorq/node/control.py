"""A running node's control endpoint, and how the ``actorq`` command finds it.

A node binds a ZeroMQ ROUTER socket at ``ipc://<private 0700 dir>/control``
and writes a small *node file* beside its SQLite journal (``<journal>.node``,
mode 0600) naming its pid and that endpoint; it removes the file when it
stops. ``actorq tree`` and ``actorq status`` read the file, send one request
and print the reply.

Requests and replies are codec frames (msgpack, no pickle). Two requests, each
with body ``None``: ``TREE``, answered with the live supervision tree as nested
maps (see `Node.tree`), and ``STATUS``, answered with a small map of the node's
counters (see `actorq.node.status`); either may be answered ``ERROR`` (a text)
instead when the node is busy or the request failed.

Requests are tiny, so everything a peer can make the node hold is small::

    peer ──▶ ROUTER  MAXMSGSIZE 4 KiB    a larger frame disconnects the peer inside libzmq
                     RCVHWM 4 per peer   queued requests: at most 16 KiB per peer
             decode  max_len 64          no string, array or map longer than a kind
             check   body is None        else dropped (bad_body): nothing is kept
             admit   2 per peer, 4 in all in flight; more are answered ERROR "busy"
    peer ◀── ROUTER  SNDHWM 4 per peer   replies to a peer that does not read are dropped

Every refused frame is dropped and counted by reason (`ControlServer.dropped`),
with at most one log line a second; a value from the wire is never formatted
with ``repr`` (see `actorq.transports.codec.describe`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import zmq

from actorq.errors import ActorStopped
from actorq.jobs.node_file import NodeNotRunning, read_node_file, write_node_file
from actorq.transports.codec import FrameError, decode, describe, encode
from actorq.transports.constants import MAX_KIND_LEN
from actorq.transports.drops import DropCounter
from actorq.transports.zmq import LoopSocket, bind_router, routed, send_reply

logger = logging.getLogger(__name__)

__all__ = ["ControlServer", "NodeNotRunning", "query", "read_node_file", "write_node_file"]

# Control kinds. A request is answered with its own kind, or with ERROR. Stable across releases.
TREE = "tree"  # request: None; reply: the live supervision tree as nested maps
STATUS = "status"  # request: None; reply: the node's counters as a small map (actorq.node.status)
ERROR = "error"  # reply only: why the request got no answer ("busy: ...", or the failure), as text
KINDS = frozenset({TREE, STATUS})
REPLY_KINDS = frozenset({TREE, STATUS, ERROR})

# Bounds on what a peer can make the node hold (see the module docstring).
MAX_REQUEST_BYTES = 4096  # a request is 8 to 10 bytes; 4 KiB leaves room for any request we may add
MAX_REQUEST_LEN = MAX_KIND_LEN  # decode's max_len: the longest field of a request is its kind
QUEUED_PER_PEER = 4  # RCVHWM and SNDHWM: a client has one request out at a time; 4 x 4 KiB in, 4 replies out
MAX_IN_FLIGHT_PER_PEER = 2  # `actorq tree` or `status` sends one; a second covers a retry after its timeout
MAX_IN_FLIGHT = 4  # in all: a tree answer walks the supervision tree, and is a reply in memory
MAX_REPLY_BYTES = 1 << 20  # a reply is one supervision tree (a status: 13 KiB at most); larger: ERROR instead
MAX_REPLY_DEPTH = 64  # a tree nests two levels per supervisor; the client walks it to print it


def parse_request(frame: bytes, kinds: frozenset[str] = KINDS) -> str:
    """Validate one request frame and return its kind.

    Args:
        frame: the request's one message part.
        kinds: the kinds served.

    Raises:
        FrameError: the frame is no valid envelope (the codec's reasons), its kind is not
            one of `kinds`, or it carries a body (``bad_body``: every request's body is None).
    """
    kind, body = decode(frame, MAX_REQUEST_LEN, kinds=kinds)
    if body is not None:
        raise FrameError("bad_body", f"{kind}: expected no body, got {describe(body)}")
    return kind


class ControlServer:
    """Answers control requests on a ROUTER socket on the node's loop.

    Args:
        loop: the node's loop.
        endpoint: where to bind (an ``ipc://`` path in the node's private directory, or
            ``tcp://127.0.0.1:*``: `endpoint` is then the address bound).
        handlers: ``{kind: async fn(body) -> reply body}``; the body is always None.

    Attributes:
        dropped: the frames dropped, by reason (requests answered "busy" under ``busy``).
        failed: the requests whose handler raised (answered with ERROR).
        accepted: the requests handed to a handler.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str,
                 handlers: dict[str, Callable[[Any], Awaitable[Any]]]) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.handlers = handlers
        self.dropped = DropCounter("control", logger)
        self.failed = DropCounter("control", logger, event="a request failed")
        self.accepted = 0
        self._kinds = frozenset(handlers)
        self._socket: LoopSocket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[bytes, int] = {}  # per peer; at most MAX_IN_FLIGHT keys

    def start(self) -> None:
        """Bind and serve. Idempotent."""
        if self._socket is not None:
            return
        self._socket = bind_router(self.loop, self.endpoint, self._on_message, name="control",
                                   max_message_bytes=MAX_REQUEST_BYTES, queued_per_peer=QUEUED_PER_PEER)
        self.endpoint = self._socket.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def close(self) -> None:
        """Stop serving. Idempotent."""
        for task in self._tasks:
            task.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _on_message(self, frames: list[bytes]) -> None:
        request = routed(frames, self._parse, self.dropped)
        if request is None:
            return
        ident, kind = request
        in_flight = self._in_flight.get(ident, 0)
        if in_flight >= MAX_IN_FLIGHT_PER_PEER or len(self._tasks) >= MAX_IN_FLIGHT:
            self.dropped.drop("busy", f"{kind}: {in_flight} from this peer, {len(self._tasks)} in all in flight")
            self._send(ident, ERROR, f"busy: {len(self._tasks)} requests in flight; try again")
            return
        self.accepted += 1
        self._in_flight[ident] = in_flight + 1
        task = self.loop.create_task(self._answer(ident, kind, self.handlers[kind]))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(ident, done))

    def _parse(self, frame: bytes) -> str:
        return parse_request(frame, self._kinds)

    def _finished(self, ident: bytes, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        left = self._in_flight.pop(ident, 1) - 1
        if left > 0:
            self._in_flight[ident] = left

    async def _answer(self, ident: bytes, kind: str, handler: Callable[[Any], Awaitable[Any]]) -> None:
        try:
            reply = encode(kind, await handler(None))
        except Exception as exc:  # a failed query must not take the node down
            # the node stopping under a query is expected, not a bug: no traceback for it
            self.failed.drop("failed", f"{kind}: {type(exc).__name__}: {exc}", exc_info=not isinstance(exc, ActorStopped))
            self._send(ident, ERROR, f"{kind} failed: {type(exc).__name__}: {exc}")
            return
        if len(reply) > MAX_REPLY_BYTES:
            self.failed.drop("reply_too_large", f"{kind}: {len(reply)} bytes")
            self._send(ident, ERROR, f"{kind}: the reply ({len(reply)} bytes) exceeds {MAX_REPLY_BYTES} bytes")
            return
        self._send_frame(ident, reply)

    def _send(self, ident: bytes, kind: str, body: Any) -> None:
        self._send_frame(ident, encode(kind, body))

    def _send_frame(self, ident: bytes, frame: bytes) -> None:
        send_reply(self._socket, ident, frame)


def query(endpoint: str, kind: str, body: Any = None, timeout: float = 5.0) -> Any:
    """Send one control request and return the reply body (blocking).

    The reply is validated as the node validates requests: one part, at most
    `MAX_REPLY_BYTES`, nested at most `MAX_REPLY_DEPTH` deep, of the request's kind.

    Raises:
        NodeNotRunning: no reply within `timeout` seconds, a malformed reply, or an
            ``ERROR`` reply (the node is busy, or the request failed); the message names
            `endpoint`.
    """
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
    try:
        sock.connect(endpoint)
        sock.send(encode(kind, body))
        if not sock.poll(int(timeout * 1000)):
            raise NodeNotRunning(f"no answer from the node's control endpoint {endpoint} within {timeout:g} s")
        frames = sock.recv_multipart()
        try:
            if len(frames) != 1:
                raise FrameError("part_count", f"{len(frames)} parts")
            reply_kind, reply = decode(frames[0], MAX_REPLY_BYTES, kinds=REPLY_KINDS, max_depth=MAX_REPLY_DEPTH)
            if reply_kind not in (kind, ERROR):
                raise FrameError("unknown_kind", describe(reply_kind))
        except FrameError as exc:
            raise NodeNotRunning(f"the node's control endpoint {endpoint} sent a malformed reply ({exc})") from None
        if reply_kind == ERROR:
            text = reply[:1000] if isinstance(reply, str) else describe(reply)
            raise NodeNotRunning(f"the node's control endpoint {endpoint} answered: {text}")
        return reply
    finally:
        sock.close()
