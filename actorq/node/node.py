"""`Node`: one actorq node, its supervision tree built from a `Config`.

::

    node (root supervisor)
    ├── core: journal writer, dispatcher, scheduler, (listener), leader, producers (rest_for_one)
    └── workers: the worker processes (simple_one_for_one)

The node reads the configuration, checks the tasks, and starts and stops the
tree; the roles in it, the relays between them and the worker processes are
its job runtime's (`actorq.jobs.runtime`), and why the tree has this shape is
in `actorq.node.tree`. It stops gracefully, in reverse start order: the
dispatcher takes no new leases; workers give back jobs they had not started
and finish the running ones within ``workers.shutdown_timeout`` (then are
killed and their jobs reclaimed); the writer commits everything it was given
before it closes.

Embedding in an asyncio service::

    async with Node(load_config("topology.toml")) as node:
        job_id = await node.queue("default").enqueue(Job("emails.send", ["a@b.c"]))
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Any, Callable, Iterator

from actorq._kernel.system import ActorSystem
from actorq.errors import ActorQError, ActorStopped
from actorq.jobs.outcome import TaskPolicy
from actorq.jobs.producers import EndpointUnusable
from actorq.jobs.queue import QueueRef
from actorq.jobs.cron import Schedules
from actorq.jobs.events import EVENTS, NodeEvent, load_hook
from actorq.jobs.runtime import JobRuntime, Progress
from actorq.jobs.task import check_name
from actorq.jobs.wire import payload_budget
from actorq.jobs.worker import check_tasks
from actorq.journal.config import redact_url
from actorq.journal.protocol import BreakerState
from actorq.node.config import Config, ConfigError, load_config
from actorq.node.dashboard.data import DashboardData, LocalNode
from actorq.node.dashboard.server import DashboardServer, DashboardUnavailable
from actorq.node.metrics import MetricsServer, MetricsUnavailable
from actorq.node.control import STATUS, TREE, ControlServer, NodeNotRunning, read_node_file, write_node_file
from actorq.node.status import build_status
from actorq.node.tree import NODE, build_tree, describe
from actorq.supervisors import StartFailed, SupervisorRef, start_supervisor

logger = logging.getLogger(__name__)

__all__ = ["Node", "NodeFailed", "Progress", "TaskCheckInterrupted", "TaskModuleError", "import_tasks"]

RATE_SAMPLES = 5  # one a second: `Node.jobs_per_second` is over about the last 5 s


class NodeFailed(ActorQError):
    """The node's tree gave up (e.g. the worker pool exceeded its restart intensity)."""


class TaskModuleError(ConfigError, NodeFailed):
    """A ``node.tasks`` entry cannot be imported, is not a task registry, or raised on import.

    A mistake in the topology, found before the node starts: a `ConfigError` naming
    the file and ``node.tasks`` (``actorq run`` exits 2 for it, as ``actorq check``
    does), and a `NodeFailed` for callers of `Node.start` that catch that.
    """


class TaskCheckInterrupted(NodeFailed):
    """The task import check did not finish: its process was killed, or ran past its time.

    Nothing is known to be wrong with ``node.tasks``: starting again may well succeed
    (``actorq run`` and ``actorq check`` exit 4, `EXIT_RETRY`, for it).
    """


def import_tasks(config: Config, source: str | None = None) -> dict[str, TaskPolicy]:
    """Import ``node.tasks`` as a worker will (a fresh interpreter, the same ``sys.path``).

    Args:
        config: the topology.
        source: the file named in errors; default: `Config.path`.

    Returns:
        ``{task name: its declared policy}``.

    Raises:
        TaskModuleError: an entry cannot be imported, raised on import, or is not a `TaskRegistry`.
        TaskCheckInterrupted: the check's process was killed by a signal, or took longer than 120 s.
    """
    try:
        return check_tasks(list(config.node.tasks), config.task_search_path)
    except ImportError as exc:
        problem = str(exc)
    except subprocess.CalledProcessError as exc:  # only for a death by a signal
        raise TaskCheckInterrupted(f"the task import check process was killed by {_signal_name(-exc.returncode)}; "
                                   "not a problem in node.tasks: try again") from None
    except subprocess.TimeoutExpired as exc:
        raise TaskCheckInterrupted(f"the task import check took more than {exc.timeout:g} s and was stopped "
                                   "(a task module that blocks on import, or a machine too busy): try again") from None
    raise TaskModuleError(source or str(config.path or "config"), "node.tasks", problem)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Node:
    """One node: its supervision tree of journal writer, dispatcher, scheduler and worker pool.

    Args:
        config: the validated topology.

    The tree is described in `actorq.node.tree`; ``await node.tree()`` returns it live,
    ``node.status()`` what ``actorq status`` shows of it (`actorq.node.status`).
    ``node.runtime`` is its job runtime (`actorq.jobs.runtime.JobRuntime`) once started.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.runtime: JobRuntime | None = None
        self.system: ActorSystem | None = None
        self.root: SupervisorRef | None = None
        self.control: ControlServer | None = None
        self.failure: str | None = None
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps only weak ones
        self._sampler: asyncio.Task[None] | None = None
        self._done_samples: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES)  # (monotonic, attempts ended)
        self._hooks: list[tuple[str, Callable[[NodeEvent], object]]] = []  # registered by `on`
        self.metrics: MetricsServer | None = None
        """The ``/metrics`` endpoint when ``[metrics] bind`` is set (after `start`)."""
        self.dashboard: DashboardServer | None = None
        """The web dashboard when ``[dashboard] bind`` is set (after `start`; its ``url``)."""

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "Node":
        """Build a node from a ``topology.toml`` file (raises `ConfigError`)."""
        return cls(load_config(path))

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Check the tasks, then start the tree: open the journal, reclaim earlier
        incarnations' leases, bind the dispatcher, start the workers. Idempotent.

        Raises:
            TaskModuleError: a task module cannot be imported (a `NodeFailed` too).
            TaskCheckInterrupted: the import check was killed or ran too long (a `NodeFailed` too).
            JournalError: the journal cannot be opened, or another node holds it.
            ConfigError: ``producers.endpoint`` cannot be served (another process listens there,
                its directory is missing, its port is taken).
        """
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        cfg = self.config
        if not cfg.node.tasks:
            logger.warning("node.tasks is empty: workers know no task, every job will end dead")
        source = str(cfg.path or "config")
        if cfg.metrics.bind and not all(importlib.util.find_spec(m) for m in MetricsUnavailable.REQUIRES):
            self._started = False  # said before any process starts
            raise ConfigError(source, "metrics.bind", str(MetricsUnavailable.default()))
        if cfg.dashboard.bind and not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn")):
            self._started = False
            raise ConfigError(source, "dashboard.bind", str(DashboardUnavailable.default()))
        try:  # from where task modules are found (their directory first), in this process
            if cfg.hooks.node:
                sys.path[:0] = [entry for entry in cfg.task_search_path if entry not in sys.path]
            file_hooks = [load_hook(entry) for entry in cfg.hooks.node]
        except ImportError as exc:
            self._started = False
            raise ConfigError(source, "hooks.node", str(exc)) from None
        try:  # fail fast, naming the module, instead of crash-looping workers until intensity runs out
            tasks = await loop.run_in_executor(None, import_tasks, cfg)
        except (TaskModuleError, TaskCheckInterrupted):
            self._started = False
            raise
        runtime = self.runtime = JobRuntime(node=cfg.node, journal=cfg.journal, dispatcher=cfg.dispatcher,
                                            workers=cfg.workers, search_path=cfg.task_search_path, tasks=tasks,
                                            producers=cfg.producers, schedules=cfg.schedules,
                                            results=cfg.results, queues=cfg.queues)
        runtime.open()
        runtime.events.buffer = cfg.hooks.buffer
        for fn in file_hooks:
            runtime.events.on("*", fn)
        for kind, fn in self._hooks:
            runtime.events.on(kind, fn)
        self.system = ActorSystem(f"node-{cfg.node.name}")
        await self.system.start()
        try:
            self._start_metrics(loop, runtime)  # first: an address in use is said before any process starts
            await self._start_dashboard(loop)
            flags, specs = build_tree(runtime, cfg.supervision, cfg.workers)
            try:
                root = await start_supervisor(self.system, flags, specs, name=NODE)
            except StartFailed as exc:
                cause = _cause(exc)
                if isinstance(cause, EndpointUnusable):  # the topology's address: say so, as for a bad value
                    raise ConfigError(str(cfg.path or "config"), cause.key, str(cause)) from None
                raise cause from None
            assert isinstance(root, SupervisorRef)
            self.root = root
            watch = loop.create_task(self._watch_root(root))
            self._tasks.add(watch)
            watch.add_done_callback(self._tasks.discard)
            self._start_control(loop, runtime)
            self._sampler = loop.create_task(self._sample_done())
        except BaseException:
            await self._teardown()
            raise
        logger.info("node %s started: journal %s, %d worker processes, endpoint %s",
                    cfg.node.name, redact_url(cfg.journal.url), cfg.workers.processes, runtime.endpoint)

    async def _watch_root(self, root: SupervisorRef) -> None:
        exit = await root.wait()
        if self._stopping:
            return
        self.failure = f"the supervision tree gave up: {exit}"
        logger.error("node %s: %s", self.config.node.name, self.failure)
        await self.stop()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (or the tree gave up)."""
        return self._stopping

    async def stop(self) -> None:
        """Stop gracefully (see `actorq.node.tree`). Idempotent; safe before `start`."""
        if not self._started:
            return
        if self._stopping:
            assert self._stopped is not None
            await asyncio.shield(self._stopped)
            return
        self._stopping = True
        logger.info("node %s stopping", self.config.node.name)
        try:
            await self._teardown()
        finally:
            assert self._stopped is not None
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def _teardown(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self.dashboard is not None:  # first: no action from the page lands while the node stops
            await asyncio.get_running_loop().run_in_executor(None, self.dashboard.stop)
            self.dashboard = None
        if self.runtime is not None:
            self.runtime.begin_stop()
        if self.root is not None:
            try:
                await self.root.stop()
            except ActorStopped:  # it gave up and stopped by itself
                pass
        if self.system is not None:
            await self.system.stop()
        self._stop_control()
        if self.metrics is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.metrics.stop)
            self.metrics = None
        if self.runtime is not None:
            await self.runtime.close()
            # the last events (the writer's final commits) go to the hooks before `stop` returns
            await asyncio.get_running_loop().run_in_executor(None, self.runtime.events.close)

    # -- metrics and hooks ----------------------------------------------------------------
    @contextlib.contextmanager
    def _serving(self, key: str, what: str, bind: str, unavailable: type[Exception]) -> Iterator[None]:
        """Start an HTTP server of the node: its web stack missing (`unavailable`) or its
        address refused is one ConfigError naming the topology's `key`."""
        source = str(self.config.path or "config")
        try:
            yield
        except unavailable as exc:
            raise ConfigError(source, key, str(exc)) from None
        except OSError as exc:
            raise ConfigError(source, key, f"cannot serve {what} at {bind}: {exc.strerror or exc}") from None

    def _start_metrics(self, loop: asyncio.AbstractEventLoop, runtime: JobRuntime) -> None:
        metrics = self.config.metrics
        if not metrics.bind:
            return
        server = MetricsServer(runtime, loop, metrics, self.config.node.name, sockets=self._control_drops)
        with self._serving("metrics.bind", "metrics", metrics.bind, MetricsUnavailable):
            server.start()
        self.metrics = server
        logger.info("node %s serves metrics at http://%s:%d/metrics", self.config.node.name, *server.address)

    async def _start_dashboard(self, loop: asyncio.AbstractEventLoop) -> None:
        dashboard = self.config.dashboard
        if not dashboard.bind:
            return
        server = DashboardServer(DashboardData(self.config, LocalNode(self, loop)), dashboard.bind,
                                 dashboard.resolved_token())
        with self._serving("dashboard.bind", "the dashboard", dashboard.bind, DashboardUnavailable):
            await loop.run_in_executor(None, server.start)
        self.dashboard = server
        logger.info("node %s serves its dashboard at %s", self.config.node.name, server.url)

    def _control_drops(self) -> dict[str, dict[str, int]]:
        return {"control": dict(self.control.dropped.by_reason)} if self.control is not None else {}

    def on(self, event: str, fn: Callable[[NodeEvent], object]) -> None:
        """Call ``fn(event)`` for each node event of kind `event` (docs/hooks.md), before or after `start`.

        `event` is one of ``enqueued``, ``started``, ``succeeded``, ``retried``, ``failed``,
        ``dead``, ``cancelled``, ``worker_started``, ``worker_exited``, ``restart``, or ``"*"``
        for all. Hooks run in order on the node's hook thread, never on its loop: a slow one
        delays only the hooks after it, and past ``hooks.buffer`` waiting events new ones are
        dropped (counted). A hook that raises is logged and counted; the job is not affected.

        Raises:
            ValueError: `event` is not a node event.
            TypeError: `fn` is not callable.
        """
        if event != "*" and event not in EVENTS:
            raise ValueError(f"unknown node event {event!r}; expected one of {', '.join(EVENTS)} or '*'")
        if not callable(fn):
            raise TypeError(f"a node hook must be callable, got {type(fn).__name__}")
        self._hooks.append((event, fn))
        if self.runtime is not None:
            self.runtime.events.on(event, fn)

    # -- control endpoint (actorq tree, actorq status) ------------------------------------
    def _start_control(self, loop: asyncio.AbstractEventLoop, runtime: JobRuntime) -> None:
        self.control = ControlServer(loop, runtime.socket_path("control"),
                                     {TREE: self._tree_request, STATUS: self._status_request})
        self.control.start()
        write_node_file(self.config.node_file, {"pid": os.getpid(), "name": self.config.node.name,
                                                "control": self.control.endpoint,
                                                "producers": runtime.producers_endpoint,
                                                "max_payload": payload_budget(self.config.dispatcher.max_frame_bytes)})

    def _stop_control(self) -> None:
        if self.control is None:
            return
        self.control.close()
        self.control = None
        try:  # only our own file: a second node refused by the journal lock never wrote one
            if read_node_file(self.config.node_file).get("pid") == os.getpid():
                self.config.node_file.unlink()
        except (NodeNotRunning, OSError):
            pass

    async def _tree_request(self, _body: object) -> dict[str, object]:
        return await self.tree()

    async def _status_request(self, _body: object) -> dict[str, Any]:
        return self.status()  # counters only: answered at once, even while the journal writer waits

    async def wait(self) -> None:
        """Wait until the node has stopped.

        Raises:
            NodeFailed: it stopped because part of its tree gave up.
        """
        assert self._stopped is not None, "node not started"
        await asyncio.shield(self._stopped)
        if self.failure:
            raise NodeFailed(self.failure)

    async def __aenter__(self) -> "Node":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- using it ------------------------------------------------------------------
    def _runtime(self) -> JobRuntime:
        if self.runtime is None:
            raise RuntimeError("node not started")
        return self.runtime

    def queue(self, name: str | None = None) -> QueueRef:
        """A ref to queue `name`: ``tell(job)`` and ``await enqueue(job)``.

        With no name, each job goes to its task's declared queue (``default`` unless
        the task names one). A job's priority and max_attempts default to its task's.
        """
        return self._runtime().queue(name)

    @property
    def schedules(self) -> Schedules:
        """The journal's cron schedules: ``await node.schedules.add(Schedule(...))``, ``remove``, ``list``.

        Raises:
            RuntimeError: the node has not started.
        """
        return self._runtime().schedules

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``, read through the writer (consistent with its commits)."""
        return await self._runtime().counts()

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not finished; a running one is stopped by the node holding it
        (an async task gets `asyncio.CancelledError`; a sync task sees ``current_job().cancelled``
        and, past ``workers.cancel_grace``, its process is replaced). Its late ack is fenced.

        Returns:
            True if it was cancelled now; False if it had finished or does not exist.

        Raises:
            JournalError: the journal refused the write.
        """
        if not isinstance(job_id, str) or not job_id:
            return False
        return await self._runtime().cancel(job_id)

    async def pause_queue(self, name: str) -> bool:
        """Pause queue `name` on every node of this journal (it lives in the journal, so a
        restart keeps it): no job of it is leased until `resume_queue`. Running jobs finish,
        and enqueueing into it still works.

        Returns:
            True if it was running, False if it was already paused.

        Raises:
            ValueError: `name` is not a valid queue name.
            JournalError: the journal refused the write.
        """
        check_name("queue name", name)
        return await self._runtime().pause_queue(name)

    async def resume_queue(self, name: str) -> bool:
        """Let queue `name` lease again; this node leases at once, others at their next poll.

        Returns:
            True if it was paused, False if it was not.

        Raises:
            ValueError: `name` is not a valid queue name.
            JournalError: the journal refused the write.
        """
        check_name("queue name", name)
        return await self._runtime().resume_queue(name)

    async def paused_queues(self) -> list[str]:
        """The names of the paused queues, sorted."""
        return await self._runtime().paused_queues()

    async def breakers(self) -> list[BreakerState]:
        """Where the circuit breakers of this node's tasks stand (``[]``, with no journal read,
        when none of its tasks declares one)."""
        return await self._runtime().breakers()

    async def key_breakers(self) -> dict[str, int]:
        """How many per-key circuit breakers of the journal are open and half-open
        (``{}``, with no journal read, when none of this node's tasks declares a key breaker)."""
        return await self._runtime().key_breakers()

    async def wait_idle(self, timeout: float = 60.0, poll: float = 0.05) -> dict[str, dict[str, int]]:
        """Wait until no job is ready, leased, scheduled or in retry; return the counts.

        Raises:
            TimeoutError: still busy after `timeout` seconds.
        """
        return await self._runtime().wait_idle(timeout, poll)

    def progress(self) -> Progress:
        """Current counters (cheap; safe to call often)."""
        return self._runtime().progress()

    async def _sample_done(self) -> None:
        """Once a second, note how many attempts have ended (for `jobs_per_second`)."""
        while True:
            progress = self._runtime().progress()
            self._done_samples.append((time.monotonic(), progress.succeeded + progress.failed))
            await asyncio.sleep(1.0)

    def jobs_per_second(self, progress: Progress | None = None) -> float | None:
        """Attempts ended (succeeded or failed) per second over the last few seconds
        (up to `RATE_SAMPLES`); None in the node's first second.

        Args:
            progress: the counters now, if the caller has just read them.
        """
        if not self._done_samples:
            return None
        progress = progress or self.progress()
        since, done_then = self._done_samples[0]
        elapsed = time.monotonic() - since
        if elapsed < 1.0:
            return None
        return max(0, progress.succeeded + progress.failed - done_then) / elapsed

    def status(self) -> dict[str, Any]:
        """What ``actorq status`` shows of this node, as the STATUS control request answers it:
        its counters, what it is doing, its jobs per second and its producer endpoint's counts
        (the shape is in `actorq.node.status`). Reads no journal: cheap, and never waits.

        Raises:
            RuntimeError: the node is not started.
        """
        progress = self.progress()
        return build_status(progress, name=self.config.node.name, pid=os.getpid(),
                            per_second=self.jobs_per_second(progress), stopping=self._stopping)

    async def tree(self) -> dict[str, Any]:
        """The live supervision tree as nested maps: ``id``, ``type``, ``kind`` (actor or
        process), ``pid``, ``state``, ``restarts``, ``strategy`` (supervisors), ``children``."""
        if self.root is None:
            raise RuntimeError("node not started")
        return await describe(self.root, self.config.node.name, self.config.supervision, self._stopping)

    @property
    def endpoint(self) -> str:
        """The dispatcher's endpoint (workers connect to it)."""
        return self._runtime().endpoint

    def worker_pids(self) -> list[int]:
        """Pids of the running worker processes."""
        return [child.pid for child in self._runtime().worker_processes()]


def _cause(exc: StartFailed) -> BaseException:
    """The error under nested `StartFailed`s (e.g. the journal's own `JournalLocked`)."""
    reason: object = exc
    while isinstance(reason, StartFailed):
        reason = reason.reason
    if isinstance(reason, BaseException):
        return reason
    return NodeFailed(f"the node's tree failed to start: {exc}")
