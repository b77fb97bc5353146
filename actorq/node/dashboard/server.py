"""`DashboardServer`: the dashboard's application on uvicorn, on a thread of its own or in the foreground.

The socket is bound before uvicorn starts (`bounded_http.ThreadedServer`), so an address in
use is an `OSError` the caller reports (uvicorn would exit the process instead). What a
client can make the server hold is bounded: `LIMIT_CONCURRENCY` connections at once (more
are closed when accepted), idle connections and unfinished request heads dropped after
`KEEP_ALIVE` s, request heads of at most `MAX_HEAD` bytes; no access log (a token link
would land in it).
"""

from __future__ import annotations

import signal
from typing import Any

from actorq.node.dashboard.data import DashboardData
from actorq.node.metrics import parse_bind


__all__ = ["DashboardServer", "DashboardUnavailable"]

LIMIT_CONCURRENCY = 32  # connections and tasks at once; more are answered 503
KEEP_ALIVE = 5  # seconds an idle keep-alive connection is kept
MAX_HEAD = 16 * 1024  # bytes of a request's head (h11's incomplete event)
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
    """Serves the dashboard on `data` at `bind` (``HOST:PORT``; port 0: any free one), within
    the bounds of `actorq.node.bounded_http` (the metrics socket's): connections capped when
    accepted, a deadline for a whole request head and for idling, heads over `MAX_HEAD`
    refused however they arrive.

    Args:
        data: what the dashboard reads and does.
        bind: the address.
        token: the token every request must carry, or None (then only loopback host names).
    """

    def __init__(self, data: DashboardData, bind: str, token: str | None = None) -> None:
        self.data = data
        self.bind = bind
        self.token = token
        self._http: Any = None  # bounded_http.ThreadedServer once listening

    def listen(self) -> None:
        """Bind the socket and build the server (idempotent): `address` is known from here on.

        Raises:
            DashboardUnavailable: Starlette or uvicorn is not installed.
            OSError: the address cannot be bound.
        """
        if self._http is not None:
            return
        try:
            from actorq.node.bounded_http import ThreadedServer
            from actorq.node.dashboard.app import build_app
        except ImportError:
            raise DashboardUnavailable.default() from None
        host, port = parse_bind(self.bind)
        self._http = ThreadedServer(build_app(self.data, self.token), host, port, name=THREAD_NAME,
                                    max_connections=LIMIT_CONCURRENCY, idle_timeout=KEEP_ALIVE,
                                    busy_timeout=REQUEST_TIME, max_head=MAX_HEAD, grace=GRACE)

    @property
    def drops(self) -> Any:
        """`bounded_http.Drops` once listening (connections and requests dropped, by reason), else None."""
        return None if self._http is None else self._http.drops

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the dashboard listens on (after `start`)."""
        if self._http is None:
            raise RuntimeError("the dashboard is not started")
        return self._http.address  # type: ignore[no-any-return]

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the dashboard (after `start`)."""
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        """Bind, then serve on a daemon thread (its own event loop); returns once it serves.

        Raises:
            DashboardUnavailable: Starlette or uvicorn is not installed.
            OSError: the address cannot be bound, or the server did not start.
        """
        self.listen()
        self._http.start()

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
            self._http.serve_here()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._http = None
            self.data.close()

    def stop(self) -> None:
        """Stop serving (idempotent): requests under way are answered first; the journal is closed."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        self.data.close()
