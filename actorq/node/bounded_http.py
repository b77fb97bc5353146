"""A small HTTP server with hard bounds, on uvicorn's h11 protocol, run on a thread of its own.

uvicorn bounds a request's head (``h11_max_incomplete_event_size``) and answers 503 past
``limit_concurrency`` requests, but it counts a connection only once its request is whole
and arms no timer before the first one: a client that opens many connections and sends
nothing, or dribbles a head a byte at a time, holds them for ever. `bounded_protocol`
closes that gap:

- a request head is at most ``max_head`` bytes, however it is read (400 past that);
- a connection beyond ``max_connections`` is closed as soon as it is accepted;
- each connection has one deadline, set when it opens and after each response, that bytes
  received do not push back: a request head not whole by then (slowloris) is dropped,
  an idle keep-alive connection closed; a request under way gets ``busy_timeout`` more once.

Each drop is counted by reason in the `Drops` given (the caller reports them). Imported
only when a server starts: uvicorn is an optional dependency.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds `ThreadedServer.start` waits for the server's thread
# uvicorn's warnings for each hostile request: counted in `Drops` instead, or harmless (an upgrade
# asked for is ignored, the request served as plain HTTP); one each would let a flood fill the log
COUNTED = ("Invalid HTTP request received.", "Exceeded concurrency limit.", "Unsupported upgrade request.",
           "No supported WebSocket library detected.")


class _Quiet(logging.Filter):
    """Drops uvicorn's per-request warnings logged on the threads named in `threads`."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName in self.threads and isinstance(record.msg, str)
                    and record.msg.startswith(COUNTED))


_quiet = _Quiet()
logging.getLogger("uvicorn.error").addFilter(_quiet)


def quiet_thread(name: str) -> None:
    """Drop uvicorn's per-request warnings logged on the thread `name` (its drops are counted)."""
    _quiet.threads.add(name)


class Drops:
    """Connections and requests a bounded server dropped, by reason (read from any thread).

    Reasons: ``connections`` (over the connection cap), ``slow_request`` (a request head not
    whole by the deadline), ``bad_request`` (not HTTP, or a head over the size cap: 400),
    ``stuck_request`` (a response not done by the second deadline).
    """

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    def add(self, reason: str) -> None:
        """Count one drop."""
        self.by_reason[reason] += 1


def bounded_protocol(max_connections: int, idle_timeout: float, busy_timeout: float, max_head: int,
                     drops: Drops) -> type:
    """An `H11Protocol` subclass with the bounds of the module docstring.

    h11 measures a head only while it is incomplete: a whole 200 KB head read at once would
    pass. The bytes are fed to it in slices of `max_head`, so a head longer than that is
    refused (400) however it arrives.
    """

    class BoundedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _extended = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.connections.discard(self)  # not held: counted out now, not when the abort is done
                drops.add("connections")
                transport.abort()
                return
            self._arm(idle_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            for start in range(0, len(data), max_head):
                if self.transport.is_closing():
                    return
                super().data_received(data[start:start + max_head])

        def send_400_response(self, msg: str) -> None:
            drops.add("bad_request")
            super().send_400_response(msg)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._extended = False
                self._arm(idle_timeout)

        def _arm(self, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:  # a request is being answered
                if not self._extended:
                    self._extended = True
                    self._arm(busy_timeout)
                    return
                drops.add("stuck_request")
            elif self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                drops.add("slow_request")  # part of a request head, never finished
            self.transport.abort()

    return BoundedH11


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket at ``(host, port)`` (port 0: any free one).

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ThreadedServer:
    """Serves an ASGI `app` at ``(host, port)`` on a daemon thread, within the bounds above.

    Args:
        app: the ASGI application (HTTP only: no lifespan, no websockets).
        host, port: where to listen (port 0: any free one).
        name: the thread's name.
        max_connections: connections open at once; more are closed when accepted.
        idle_timeout: seconds a connection may take to send a whole request head, and may
            stay idle between requests.
        busy_timeout: the further seconds a request being answered gets at its deadline.
        max_head: bytes of a request's head (more: 400 and closed).
        grace: seconds requests under way get to finish at `stop` (None: `busy_timeout`).
    """

    def __init__(self, app: Any, host: str, port: int, *, name: str, max_connections: int,
                 idle_timeout: float, busy_timeout: float, max_head: int, grace: int | None = None) -> None:
        self.drops = Drops()
        self.name = name
        protocol = bounded_protocol(max_connections, idle_timeout, busy_timeout, max_head, self.drops)
        # limit_concurrency counts connections too: one above the cap, so a request on the last
        # connection allowed is answered rather than refused with 503
        quiet_thread(name)
        # log_config None: uvicorn leaves the process's logging as it is (its records go to the root's handlers)
        config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off",
                                http=protocol, loop="asyncio", limit_concurrency=max_connections + 1,
                                timeout_keep_alive=idle_timeout, h11_max_incomplete_event_size=max_head,
                                server_header=False, date_header=False, ws="none",
                                timeout_graceful_shutdown=max(1, int(busy_timeout if grace is None else grace)))
        self._server = uvicorn.Server(config)
        self._grace = config.timeout_graceful_shutdown
        self._sock: socket.socket | None = bind_socket(host, port)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` it listens on."""
        if self._sock is None:
            raise RuntimeError(f"{self.name} is stopped")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._server.server_state.connections)

    def start(self) -> None:
        """Serve on a daemon thread; returns once it serves.

        Raises:
            OSError: the server did not start.
        """
        server, sock = self._server, self._sock
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # SystemExit from uvicorn too: this thread only
                failed.append(exc)
                logger.error("%s: the server stopped: %s", self.name, exc)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.01)
        if not server.started:
            self.stop()
            raise OSError(f"the {self.name} server did not start: {failed[0] if failed else 'timed out'}")

    def serve_here(self) -> None:
        """Serve in the calling thread until uvicorn stops (on SIGINT or SIGTERM, which it
        raises again when it has stopped gracefully); then close the socket."""
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent): requests under way are answered first."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._grace + 5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
