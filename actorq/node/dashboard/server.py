"""`DashboardServer`: the dashboard's application on uvicorn, on a thread of its own or in the foreground.

The socket is bound here, before uvicorn starts, so an address in use is an `OSError` the
caller reports (uvicorn would exit the process instead). uvicorn's limits bound what a
client can make the server hold: `LIMIT_CONCURRENCY` connections and requests at once (more
are answered 503), keep-alive connections closed after `KEEP_ALIVE` s idle, request heads of
at most `MAX_HEAD` bytes; no access log (a token link would land in it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from typing import Any

from actorq.node.dashboard.data import DashboardData
from actorq.node.metrics import parse_bind

logger = logging.getLogger(__name__)

__all__ = ["DashboardServer", "DashboardUnavailable"]

LIMIT_CONCURRENCY = 32  # connections and tasks at once; more are answered 503
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept
MAX_HEAD = 16 * 1024  # bytes of a request's head (h11's incomplete event)
START_TIMEOUT = 10.0  # seconds `start` waits for the server thread
GRACE = 5  # seconds requests under way get to finish when the dashboard stops
REQUEST_TIME = 30  # seconds a request being answered gets past its connection's deadline
THREAD_NAME = "actorq-dashboard"


class DashboardUnavailable(RuntimeError):
    """``[dashboard] bind`` is set but Starlette or uvicorn is not installed."""

    @classmethod
    def default(cls) -> "DashboardUnavailable":
        """The error with its usual text (what to install)."""
        return cls("serving the dashboard needs starlette and uvicorn: pip install 'actorq[dashboard]'")


def _exit_quietly(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class DashboardServer:
    """Serves the dashboard on `data` at `bind` (``HOST:PORT``; port 0: any free one).

    Args:
        data: what the dashboard reads and does.
        bind: the address.
        token: the token every request must carry, or None (then only loopback host names).
    """

    def __init__(self, data: DashboardData, bind: str, token: str | None = None) -> None:
        self.data = data
        self.bind = bind
        self.token = token
        self._sock: socket.socket | None = None
        self._server: Any = None
        self.drops: Any = None  # bounded_http.Drops once listening: connections and requests dropped, by reason
        self._thread: threading.Thread | None = None

    def listen(self) -> None:
        """Bind the socket and build the server (idempotent): `address` is known from here on.

        Raises:
            DashboardUnavailable: Starlette or uvicorn is not installed.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            return
        try:
            import uvicorn

            from actorq.node.bounded_http import Drops, bind_socket, bounded_protocol, quiet_thread
            from actorq.node.dashboard.app import build_app
        except ImportError:
            raise DashboardUnavailable.default() from None
        app = build_app(self.data, self.token)
        self._sock = bind_socket(*parse_bind(self.bind))
        # the metrics socket's bounds: connections capped when accepted, a deadline for a whole
        # request head and for idling, heads over MAX_HEAD refused however they arrive
        self.drops = Drops()
        protocol = bounded_protocol(LIMIT_CONCURRENCY, KEEP_ALIVE, REQUEST_TIME, MAX_HEAD, self.drops)
        quiet_thread(THREAD_NAME)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http=protocol,
                                loop="asyncio", limit_concurrency=LIMIT_CONCURRENCY + 1, timeout_keep_alive=KEEP_ALIVE,
                                h11_max_incomplete_event_size=MAX_HEAD, server_header=False, ws="none",
                                timeout_graceful_shutdown=GRACE)
        self._server = uvicorn.Server(config)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the dashboard listens on (after `start`)."""
        if self._sock is None:
            raise RuntimeError("the dashboard is not started")
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the dashboard (after `start`)."""
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        """Bind, then serve on a daemon thread (its own event loop); returns once it serves.

        Raises:
            DashboardUnavailable: Starlette or uvicorn is not installed.
            OSError: the address cannot be bound.
        """
        self.listen()
        server, sock = self._server, self._sock
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # SystemExit from uvicorn too: this thread only
                failed.append(exc)
                logger.error("dashboard: the server stopped: %s", exc)

        self._thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.01)
        if not server.started:
            self.stop()
            raise OSError(f"the dashboard server did not start: {failed[0] if failed else 'timed out'}")

    def serve_forever(self) -> None:
        """Bind and serve in the calling (main) thread until SIGINT or SIGTERM.

        Raises:
            DashboardUnavailable: Starlette or uvicorn is not installed.
            OSError: the address cannot be bound.
        """
        self.listen()
        # uvicorn stops gracefully on either signal, then raises it again for the handler it found:
        # both end the process as a normal exit here
        previous = signal.signal(signal.SIGTERM, _exit_quietly)
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._close_socket()
            self.data.close()

    def stop(self) -> None:
        """Stop serving (idempotent): requests under way are answered first; the journal is closed."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        self._server = None
        self._close_socket()
        self.data.close()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
