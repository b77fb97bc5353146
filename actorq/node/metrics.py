"""The node's Prometheus endpoint: ``[metrics] bind`` serves ``/metrics`` (docs/metrics.md).

::

    scrape ──▶ uvicorn, bounded (`actorq.node.bounded_http`, a thread of its own)
                 └─ GET /metrics ──▶ prometheus_client's exposition, on a worker thread
                      └─ NodeCollector.collect ──▶ one snapshot, taken on the node's loop:
                      counters of the writers, dispatcher, producer endpoint, event hub (no I/O)
                      jobs by queue and state: `Journal.counts`, and each queue's last
                      minute (`Journal.queue_stats`, every node's work), read at most
                      every ``metrics.counts_every`` seconds and cached

Nothing is updated per job for the metrics: each scrape reads the counters the
node keeps anyway. The histograms too are kept by their owners: the journal
writer notes each group's commit time and size (one bisect per group), and the
event hub, on its own thread, the run time of each job started here (from the
``started`` event to its end's, see `actorq.jobs.events`).

The socket is bounded like every other one of the node: `MAX_CONNECTIONS` connections
at once (more are closed when accepted), request heads of `MAX_HEAD` bytes (more: 400),
`IDLE_TIMEOUT` s to send a whole request head and between requests (a slow client is
dropped, however steadily it dribbles), `MAX_SCRAPES` scrapes answered at once. Only
``GET``/``HEAD /metrics`` is served: any other path is 404, any other method 405. Drops
are counted in ``actorq_malformed_frames{socket="metrics"}``.

``prometheus-client`` and ``uvicorn`` (both in ``actorq[metrics]``) are imported only
when ``bind`` is set: the rest of actorq runs without them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from actorq.jobs import journal_writer as jw
from actorq.jobs.events import RunTimes
from actorq.journal.protocol import QueueStats

if TYPE_CHECKING:
    from actorq.jobs.runtime import JobRuntime

logger = logging.getLogger(__name__)

__all__ = ["MetricsConfig", "MetricsServer", "MetricsUnavailable", "bind_problem", "parse_bind"]

SNAPSHOT_TIMEOUT = 10.0  # seconds a scrape waits for the node's loop
MINUTE = 60.0  # seconds of the queues' figures (`Journal.queue_stats`)
COUNTS_TIMEOUT = 5.0  # seconds a scrape waits for the journal's counts; then it reports the cached ones
MAX_SCRAPES = 4  # scrapes answered at once; more fail at once (HTTP 500), none queues on the node's loop
MAX_CONNECTIONS = 16  # connections open at once; more are closed as soon as they are accepted
IDLE_TIMEOUT = 10.0  # seconds to send a whole request head, and to keep an idle connection
MAX_HEAD = 8 * 1024  # bytes of a request's head


def parse_bind(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` -> ``("127.0.0.1", 9108)``; ``"[::1]:9108"`` -> ``("::1", 9108)``.

    Raises:
        ValueError: not ``HOST:PORT`` with a port from 0 to 65535 (0: any free port).
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. '127.0.0.1:9108', port 0 to 65535), got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(value: str) -> str | None:
    """A settings check: None for an empty or valid ``HOST:PORT`` bind, else what is wrong."""
    if not value:
        return None
    try:
        parse_bind(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The ``[metrics]`` section (docs/metrics.md).

    - ``bind``: ``"HOST:PORT"`` to serve ``/metrics`` on; ``""`` (default): no endpoint.
      Port 0 takes any free port (`MetricsServer.address` says which).
    - ``allow_remote``: a host other than loopback is refused unless this is true: the
      endpoint has no authentication (default false).
    - ``counts_every``: the least seconds between two reads of the journal's counts by
      queue and state (a scrape in between gets the cached ones); 0.1 to 3600, default 5.
    """

    bind: str = field(default="", metadata={"check": check_bind})
    allow_remote: bool = False
    counts_every: float = field(default=5.0, metadata={"min": 0.1, "max": 3600.0})


def bind_problem(config: MetricsConfig) -> str | None:
    """Why ``metrics.bind`` is refused with these settings (a host beyond loopback without
    ``allow_remote``), or None."""
    if not config.bind or config.allow_remote:
        return None
    host, _ = parse_bind(config.bind)
    if is_loopback(host):
        return None
    return (f"{host} is not a loopback address and /metrics has no authentication: "
            "set metrics.allow_remote = true to serve it beyond this machine")


class MetricsUnavailable(RuntimeError):
    """``[metrics] bind`` is set but ``prometheus-client`` or ``uvicorn`` is not installed."""

    REQUIRES = ("prometheus_client", "uvicorn")
    """The modules serving metrics imports."""

    @classmethod
    def default(cls) -> "MetricsUnavailable":
        """The error with its usual text (what to install)."""
        return cls("serving metrics needs prometheus-client and uvicorn: pip install 'actorq[metrics]'")


class MetricsServer:
    """Serves ``/metrics`` for one node's job runtime on a bounded HTTP server (the module docstring).

    Args:
        runtime: the node's job runtime (its counters are read at each scrape).
        loop: the node's loop, where each snapshot is taken.
        config: the ``[metrics]`` settings (``bind`` set).
        node: the node's name, a label of every series.
        sockets: the drop counts of the node's other sockets, ``{socket: {reason: count}}``
            (read on the loop at each scrape), beside the runtime's dispatcher and producers.
    """

    def __init__(self, runtime: "JobRuntime", loop: asyncio.AbstractEventLoop, config: MetricsConfig,
                 node: str, sockets: Callable[[], Mapping[str, Mapping[str, int]]] = dict) -> None:
        self.runtime = runtime
        self.sockets = sockets
        self.loop = loop
        self.config = config
        self.node = node
        self._server: Any = None
        self._counts: dict[str, dict[str, int]] = {}
        self._counts_at: float | None = None  # time.monotonic() of the cached counts
        self._minute: dict[str, QueueStats] = {}  # each queue's last minute, read with the counts
        self._counts_read: asyncio.Task[tuple[dict[str, dict[str, int]], dict[str, QueueStats]]] | None = None
        self._scrapes = threading.BoundedSemaphore(MAX_SCRAPES)

    def start(self) -> None:
        """Bind and serve on a daemon thread; the event hub starts measuring run times.

        Raises:
            MetricsUnavailable: prometheus-client is not installed.
            OSError: the address cannot be bound.
        """
        try:
            from prometheus_client.registry import CollectorRegistry

            from actorq.node.bounded_http import ThreadedServer
        except ImportError:
            raise MetricsUnavailable.default() from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        host, port = parse_bind(self.config.bind)
        server = ThreadedServer(_App(registry), host, port, name="actorq-metrics", max_connections=MAX_CONNECTIONS,
                                idle_timeout=IDLE_TIMEOUT, busy_timeout=SNAPSHOT_TIMEOUT + COUNTS_TIMEOUT,
                                max_head=MAX_HEAD)
        server.start()
        self._server = server
        self.runtime.events.timing = True
        self.runtime.events.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the endpoint listens on (after `start`)."""
        if self._server is None:
            raise RuntimeError("the metrics endpoint is not started")
        return self._server.address

    @property
    def connections(self) -> int:
        """HTTP connections open now (at most `MAX_CONNECTIONS`, once each is accepted)."""
        return 0 if self._server is None else self._server.connections

    def dropped(self) -> dict[str, int]:
        """Connections and requests the endpoint dropped, by reason (`bounded_http.Drops`)."""
        return {} if self._server is None else dict(self._server.drops.by_reason)

    def stop(self) -> None:
        """Stop serving (idempotent); a scrape under way is answered first."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    # -- one scrape ------------------------------------------------------------------------------
    def snapshot(self) -> "_Snapshot":
        """Everything a scrape reports, read on the node's loop (called on the server's thread).

        Raises:
            TimeoutError: the node's loop or the journal did not answer in `SNAPSHOT_TIMEOUT` s.
            RuntimeError: `MAX_SCRAPES` scrapes are under way already.
        """
        if not self._scrapes.acquire(blocking=False):
            raise RuntimeError(f"more than {MAX_SCRAPES} scrapes at once")
        try:
            future = asyncio.run_coroutine_threadsafe(self._snapshot(), self.loop)
            try:
                return future.result(SNAPSHOT_TIMEOUT)
            except TimeoutError:
                future.cancel()
                raise
        finally:
            self._scrapes.release()

    async def _read_journal(self) -> tuple[dict[str, dict[str, int]], dict[str, QueueStats]]:
        """The journal's counts and its queues' last minute: two reads of small tables."""
        return await self.runtime.counts(), await self.runtime.queue_stats(MINUTE)

    async def _snapshot(self) -> "_Snapshot":
        runtime = self.runtime
        now = time.monotonic()
        if self._counts_at is None or now - self._counts_at >= self.config.counts_every:
            # one read at a time: scrapes during a journal stall wait on the same one, none piles up
            if self._counts_read is None or self._counts_read.done():
                self._counts_read = asyncio.ensure_future(self._read_journal())
            try:
                self._counts, self._minute = await asyncio.wait_for(asyncio.shield(self._counts_read), COUNTS_TIMEOUT)
                self._counts_at = time.monotonic()
            except Exception as exc:  # the cached counts (if any) are reported, with their age
                logger.warning("metrics: the journal's counts could not be read: %s",
                               str(exc) or type(exc).__name__)
        hub = runtime.events
        run_times = {queue: (list(h.counts), h.total) for queue, h in list(hub.run_times.items())}
        queue_waits = {queue: (list(h.counts), h.total) for queue, h in list(hub.queue_waits.items())}
        progress = runtime.progress()
        return _Snapshot(
            counts={q: dict(states) for q, states in self._counts.items()}, minute=dict(self._minute),
            counts_age=None if self._counts_at is None else time.monotonic() - self._counts_at,
            counters=dict(runtime.counters()), cancelled=runtime.cancelled,
            worker_restarts=runtime.worker_restarts, workers=progress.workers, in_flight=progress.in_flight,
            journal_wait=progress.journal_wait, journal_error=progress.journal_error is not None,
            malformed={**runtime.malformed_by_reason(), **{k: dict(v) for k, v in self.sockets().items()},
                       "metrics": self.dropped()},
            commits=runtime.commit_histograms(),
            run_times=run_times, queue_waits=queue_waits, events_dropped=hub.dropped, hook_errors=dict(hub.hook_errors))


class _App:
    """The ASGI application: ``GET``/``HEAD /metrics`` renders `registry` on a worker thread
    (a scrape waits on the node's loop: uvicorn's own loop keeps serving); anything else is
    404 or 405 without reading a request body."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"not found: only /metrics is served\n")
            return
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed: GET /metrics\n", ((b"allow", b"GET, HEAD"),))
            return
        accept = b", ".join(v for k, v in scope["headers"] if k == b"accept").decode("latin-1")
        try:
            body, content_type = await asyncio.get_running_loop().run_in_executor(None, self._render, accept)
        except Exception as exc:  # the node's loop or journal did not answer, or too many scrapes
            logger.warning("metrics: a scrape failed: %s", str(exc) or type(exc).__name__)
            await _answer(send, 500, f"metrics unavailable: {str(exc) or type(exc).__name__}\n".encode())
            return
        await _answer(send, 200, b"" if method == "HEAD" else body,
                      content_type=content_type.encode(), length=len(body))

    def _render(self, accept: str) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


async def _answer(send: Callable[..., Any], status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = (),
                  content_type: bytes = b"text/plain; charset=utf-8", length: int | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body) if length is None else length).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Snapshot:
    counts: dict[str, dict[str, int]]
    minute: dict[str, QueueStats]
    counts_age: float | None
    counters: dict[str, int]
    cancelled: int
    worker_restarts: int
    workers: int
    in_flight: int
    journal_wait: float
    journal_error: bool
    malformed: dict[str, dict[str, int]]
    commits: tuple[list[int], float, list[int]]
    run_times: dict[str, tuple[list[int], float]]
    queue_waits: dict[str, tuple[list[int], float]]
    events_dropped: int
    hook_errors: dict[str, int]


# counters of `JobRuntime.counters`: (key, metric name without _total, help)
_COUNTERS = (
    ("enqueued", "actorq_jobs_enqueued", "Jobs this node's journal writer inserted."),
    ("succeeded", "actorq_jobs_succeeded", "Attempts that succeeded, as the journal stored them."),
    ("failed", "actorq_attempts_failed", "Attempts that did not succeed (raised, timed out, crashed...), stored."),
    ("retried", "actorq_jobs_retried", "Failed attempts whose job will run again (retry, or back to ready)."),
    ("dead", "actorq_jobs_dead", "Jobs that went dead (attempts used up, or unrunnable)."),
    ("gave_up", "actorq_jobs_failed", "Jobs given up for good (state failed: a permanent error, a discard)."),
    ("stale_acks", "actorq_stale_acks", "Acks the journal refused: their lease was no longer current."),
    ("reclaimed", "actorq_jobs_reclaimed", "Jobs taken back from dead or silent worker processes."),
    ("lost_workers", "actorq_workers_lost", "Worker processes silent past the heartbeat timeout."),
    ("commits", "actorq_journal_commits", "Groups the journal writers committed."),
    ("ops", "actorq_journal_ops", "Ops in those groups."),
)


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last above every bound) as Prometheus's cumulative ``le`` buckets."""
    out, total = [], 0
    for bound, n in zip((*map(str, bounds), "+Inf"), counts):
        total += n
        out.append((bound, float(total)))
    return out


class _Collector:
    """Reads a `_Snapshot` at each scrape and yields it as metric families."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def describe(self) -> list[Any]:
        return []  # unchecked collector: its series depend on the journal's queues

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snap = self.server.snapshot()
        node = self.server.node
        jobs = GaugeMetricFamily("actorq_jobs", "Jobs in the journal by queue and state (read at most every "
                                 "metrics.counts_every seconds).", labels=["node", "queue", "state"])
        for queue, states in sorted(snap.counts.items()):
            for state, n in sorted(states.items()):
                jobs.add_metric([node, queue, state], n)
        yield jobs
        rate = GaugeMetricFamily("actorq_queue_finished_per_second", "Jobs of the queue that reached a final state "
                                 "per second over the last minute, every node's (the journal's figures).",
                                 labels=["node", "queue"])
        wait = GaugeMetricFamily("actorq_queue_wait_mean_seconds", "Mean wait from due to leased of the queue's "
                                 "leases over the last minute, every node's (absent without leases).",
                                 labels=["node", "queue"])
        for queue, stats in sorted(snap.minute.items()):
            rate.add_metric([node, queue], stats.rate)
            if stats.wait_mean is not None:
                wait.add_metric([node, queue], stats.wait_mean)
        yield rate
        yield wait
        if snap.counts_age is not None:
            age = GaugeMetricFamily("actorq_jobs_counts_age_seconds", "Age of the journal counts reported.",
                                    labels=["node"])
            age.add_metric([node], snap.counts_age)
            yield age
        for key, name, text in _COUNTERS:
            family = CounterMetricFamily(name, text, labels=["node"])
            family.add_metric([node], snap.counters.get(key, 0))
            yield family
        for name, text, value in (
                ("actorq_jobs_cancelled", "Jobs cancelled through this node before they finished.", snap.cancelled),
                ("actorq_worker_restarts", "Worker processes started beyond workers.processes.",
                 snap.worker_restarts),
                ("actorq_node_events_dropped", "Node events dropped: the hooks' buffer was full.",
                 snap.events_dropped)):
            family = CounterMetricFamily(name, text, labels=["node"])
            family.add_metric([node], value)
            yield family
        hooks = CounterMetricFamily("actorq_hook_errors", "Node hook calls that raised, by event.",
                                    labels=["node", "event"])
        for event, n in sorted(snap.hook_errors.items()):
            hooks.add_metric([node, event], n)
        yield hooks
        malformed = CounterMetricFamily("actorq_malformed_frames", "Frames dropped as malformed, by socket and "
                                        "reason.", labels=["node", "socket", "reason"])
        for socket, reasons in sorted(snap.malformed.items()):
            for reason, n in sorted(reasons.items()):
                malformed.add_metric([node, socket, reason], n)
        yield malformed
        for name, text, value in (
                ("actorq_workers", "Worker processes connected to the dispatcher.", snap.workers),
                ("actorq_jobs_in_flight", "Jobs leased to this node's workers.", snap.in_flight),
                ("actorq_journal_wait_seconds", "How long the journal group under way has taken (0: none).",
                 snap.journal_wait),
                ("actorq_journal_failing", "1 while the journal writer's latest group failed.",
                 int(snap.journal_error))):
            gauge = GaugeMetricFamily(name, text, labels=["node"])
            gauge.add_metric([node], value)
            yield gauge
        times, total, groups = snap.commits
        commit = HistogramMetricFamily("actorq_journal_commit_seconds", "Time of each committed journal group.",
                                       labels=["node"])
        commit.add_metric([node], _buckets(jw.COMMIT_BUCKETS, times), total)
        yield commit
        size = HistogramMetricFamily("actorq_journal_group_ops", "Ops in each committed journal group.",
                                     labels=["node"])
        size.add_metric([node], _buckets(jw.GROUP_BUCKETS, groups), float(snap.counters.get("ops", 0)))
        yield size
        run = HistogramMetricFamily("actorq_job_run_seconds", "From a job's start on this node (sent to its "
                                    "worker) to its end's event (stored by the journal).", labels=["node", "queue"])
        for queue, (counts, seconds) in sorted(snap.run_times.items()):
            run.add_metric([node, queue], _buckets(RunTimes.BUCKETS, counts), seconds)
        yield run
        wait = HistogramMetricFamily("actorq_job_queue_wait_seconds", "From when a job was due (enqueued or "
                                     "retried through this node, or its due time if later) to its start here.",
                                     labels=["node", "queue"])
        for queue, (counts, seconds) in sorted(snap.queue_waits.items()):
            wait.add_metric([node, queue], _buckets(RunTimes.BUCKETS, counts), seconds)
        yield wait

