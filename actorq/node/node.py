"""`Node`: one actorq node, its supervision tree built from a `Config`.

::

    node (root supervisor)
    ├── core: journal writer, dispatcher, scheduler (rest_for_one)
    └── workers: the worker processes (simple_one_for_one)

See `actorq.node.tree` for why the tree has this shape and how it stops:
gracefully, in reverse start order. The dispatcher takes no new leases;
workers give back jobs they had not started and finish the running ones
within ``workers.shutdown_timeout`` (then are killed and their jobs
reclaimed); the writer commits everything it was given before it closes.

Embedding in an asyncio service::

    async with Node(load_config("topology.toml")) as node:
        job_id = await node.queue("default").enqueue(Job("emails.send", ["a@b.c"]))
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from typing import Any

from actorq._kernel.system import ActorSystem
from actorq.errors import ActorQError, ActorStopped, JournalError
from actorq.jobs import journal_writer as jw
from actorq.jobs.dispatcher import Dispatcher
from actorq.jobs.queue import QueueRef
from actorq.jobs.scheduler import Scheduler
from actorq.jobs.worker import WORKER_BOOT, WorkerSpec, check_tasks
from actorq.journal.protocol import Journal
from actorq.journal import open_journal
from actorq.node.config import Config, load_config, redact_url
from actorq.node.control import ControlServer, NodeNotRunning, read_node_file, write_node_file
from actorq.node.tree import NODE, build_tree, describe
from actorq.supervisors import Exit, StartFailed, SupervisorRef, process_start, start_supervisor
from actorq.transports import constants as wire
from actorq.transports.constants import payload_budget
from actorq.transports.zmq import private_ipc_dir

logger = logging.getLogger(__name__)

__all__ = ["Node", "NodeFailed", "Progress"]


class NodeFailed(ActorQError):
    """The node's tree gave up (e.g. the worker pool exceeded its restart intensity)."""


@dataclass(frozen=True)
class Progress:
    """A snapshot of a node's counters."""

    succeeded: int
    failed: int
    reclaimed: int
    in_flight: int
    workers: int
    commits: int
    ops: int
    worker_restarts: int
    malformed: int
    stale_acks: int = 0
    lost_workers: int = 0
    journal_error: str | None = None  # the latest group failed (e.g. the database is unreachable)


class Node:
    """One node: its supervision tree of journal writer, dispatcher, scheduler and worker pool.

    Args:
        config: the validated topology.

    The tree is described in `actorq.node.tree`; ``await node.tree()`` returns it live.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        # the current incarnation of each role (replaced when its supervisor restarts it)
        self.writer: jw.JournalWriter | None = None
        self.dispatcher: Dispatcher | None = None
        self.scheduler: Scheduler | None = None
        self.system: ActorSystem | None = None
        self.root: SupervisorRef | None = None
        self.endpoint = ""
        self._ipc_dir: str | None = None
        self._started = False
        self._stopped: asyncio.Future[None] | None = None
        self._stopping = False
        self.failure: str | None = None
        self.reclaimed_at_start = 0
        self._reclaimed = False
        self.fail_tasks: tuple[str, ...] = ()
        self.control: ControlServer | None = None
        self._workers: dict[int, Any] = {}  # pid -> ProcessChild of the running worker processes
        self.worker_starts = 0
        self.worker_exits: list[tuple[int, str]] = []  # (pid, exit reason), newest last (bounded)
        self.wal_checkpoints = 0  # TRUNCATE checkpoints run because the SQLite WAL passed its limit
        self.leadership: Any = None  # the current Leadership (actorq.jobs.leader), once started
        self._orphans: list[tuple[str, str]] = []  # (owner, why) of workers that died with no dispatcher
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps only weak ones
        self._launch_worker = process_start(self._worker_argv)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "Node":
        """Build a node from a ``topology.toml`` file (raises `ConfigError`)."""
        return cls(load_config(path))

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Check the tasks, then start the tree: open the journal, reclaim earlier
        incarnations' leases, bind the dispatcher, start the workers. Idempotent.

        Raises:
            NodeFailed: a task module cannot be imported.
            JournalError: the journal cannot be opened, or another node holds it.
        """
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        cfg = self.config
        if not cfg.node.tasks:
            logger.warning("node.tasks is empty: workers know no task, every job will end dead")
        try:  # fail fast, naming the module, instead of crash-looping workers until intensity runs out
            tasks = await loop.run_in_executor(None, check_tasks, list(cfg.node.tasks), cfg.task_search_path)
        except ImportError as exc:
            self._started = False
            raise NodeFailed(f"{cfg.path or 'config'}: node.tasks: {exc}") from None
        self.fail_tasks = tuple(sorted(name for name, on_crash in tasks.items() if on_crash == "fail"))
        self._ipc_dir = private_ipc_dir()
        self.endpoint = cfg.node.endpoint or f"ipc://{self._ipc_dir}/dispatcher"
        self.system = ActorSystem(f"node-{cfg.node.name}")
        await self.system.start()
        try:
            flags, specs = build_tree(self)
            try:
                root = await start_supervisor(self.system, flags, specs, name=NODE)
            except StartFailed as exc:
                raise _cause(exc) from None
            assert isinstance(root, SupervisorRef)
            self.root = root
            watch = loop.create_task(self._watch_root(root))
            self._tasks.add(watch)
            watch.add_done_callback(self._tasks.discard)
            self._start_control(loop)
        except BaseException:
            await self._teardown()
            raise
        logger.info("node %s started: journal %s, %d worker processes, endpoint %s",
                    cfg.node.name, redact_url(cfg.journal.url), cfg.workers.processes, self.endpoint)

    async def _after_writer_start(self, writer: jw.JournalWriter) -> None:
        """Called by the journal writer actor each time a writer has opened the journal."""
        if self._reclaimed:  # a restarted writer: live workers still hold their leases
            return
        cfg = self.config
        # An SQLite journal has one node (file lock): every lease left in it is from an earlier
        # run, whatever its name. A shared journal: only this node's own earlier incarnations.
        owner_prefix = "" if cfg.is_sqlite else f"{cfg.node.name}/"
        self.reclaimed_at_start = await writer.call(
            jw.RECLAIM_ALL, ("node restarted (lease of an earlier incarnation)", owner_prefix, self.fail_tasks))
        self._reclaimed = True
        if self.reclaimed_at_start:
            logger.warning("reclaimed %d jobs leased by an earlier run of this node", self.reclaimed_at_start)

    async def _watch_root(self, root: SupervisorRef) -> None:
        exit = await root.wait()
        if self._stopping:
            return
        self.failure = f"the supervision tree gave up: {exit}"
        logger.error("node %s: %s", self.config.node.name, self.failure)
        await self.stop()

    def _open_journal(self) -> Journal:
        cfg = self.config
        journal = open_journal(cfg.journal_url, synchronous=cfg.journal.synchronous,
                               busy_timeout=cfg.journal.busy_timeout, schema=cfg.journal.schema,
                               connect_retry_for=cfg.journal.connect_retry_for)
        try:
            journal.attach_node()
        except BaseException:
            journal.close()
            raise
        return journal

    # -- workers ------------------------------------------------------------------------
    def _worker_argv(self, *, incarnation: str) -> list[str]:
        cfg = self.config
        spec = WorkerSpec(
            endpoint=self.endpoint,
            owner=f"{cfg.node.name}/{{pid}}/{incarnation}",
            concurrency=cfg.workers.concurrency,
            prefetch=cfg.workers.prefetch,
            queues=list(cfg.workers.queues),
            tasks=list(cfg.node.tasks),
            sys_path=cfg.task_search_path,
            log_level=cfg.node.log_level,
            max_frame_bytes=cfg.dispatcher.max_frame_bytes,
            heartbeat_interval=cfg.workers.heartbeat_interval,
        )
        return [sys.executable, "-c", WORKER_BOOT, spec.to_json()]

    async def _start_worker(self) -> Any:
        """The worker pool's start function: one worker process."""
        child = await self._launch_worker()
        self._workers[child.pid] = child
        self.worker_starts += 1
        return child

    def _on_worker_exit(self, _child_id: str, child: Any, exit: Exit) -> None:
        """A worker process exited: its leased jobs go back to ready at once."""
        self._workers.pop(child.pid, None)
        self.worker_exits.append((child.pid, str(exit)))
        del self.worker_exits[:-1000]
        owner = self.owner_of(child.pid, child.incarnation)
        if self.dispatcher is not None and not self.dispatcher.closed:
            self.dispatcher.worker_exited(owner, str(exit))
        else:  # between a dispatcher's death and its restart: the next one reclaims
            self._orphans.append((owner, f"worker died ({exit})"))

    def owner_of(self, pid: int, incarnation: str) -> str:
        """The lease owner id of a worker process (node, process, incarnation)."""
        return f"{self.config.node.name}/{pid}/{incarnation}"

    def is_leader(self) -> bool:
        """Whether this node leads the duties that run once among nodes (rescue of expired leases)."""
        return self.leadership is not None and self.leadership.is_leader()

    def _on_enqueued(self, queues: set[str]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake(queues)

    def _wake(self, queues: set[str] | None) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake(queues)

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
        if self.dispatcher is not None:
            self.dispatcher.stop_leasing()
        if self.root is not None:
            try:
                await self.root.stop()
            except ActorStopped:  # it gave up and stopped by itself
                pass
        if self.system is not None:
            await self.system.stop()
        if self.writer is not None:  # never left open, whatever happened above
            await self.writer.stop()
        self._stop_control()
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    # -- control endpoint (actorq tree) ----------------------------------------------------
    def _start_control(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._ipc_dir is not None
        self.control = ControlServer(loop, f"ipc://{self._ipc_dir}/control", {wire.TREE: self._tree_request})
        self.control.start()
        write_node_file(self.config.node_file, {"pid": os.getpid(), "name": self.config.node.name,
                                                "control": self.control.endpoint})

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
    def queue(self, name: str = "default") -> QueueRef:
        """A ref to queue `name`: ``tell(job)`` and ``await enqueue(job)``."""
        if self.writer is None:
            raise RuntimeError("node not started")
        # through the node, so a ref outlives a restart of the journal writer
        return QueueRef(name, _CurrentWriter(self), self.writer.loop,
                        payload_budget(self.config.dispatcher.max_frame_bytes))

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``, read through the writer (consistent with its commits)."""
        assert self.writer is not None
        return await self.writer.call(jw.CALL, lambda journal: journal.counts())

    async def wait_idle(self, timeout: float = 60.0, poll: float = 0.05) -> dict[str, dict[str, int]]:
        """Wait until no job is ready, leased, scheduled or in retry; return the counts.

        Raises:
            TimeoutError: still busy after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            counts = await self.counts()
            busy = sum(n for states in counts.values() for s, n in states.items()
                       if s in ("ready", "leased", "scheduled", "retry"))
            if busy == 0:
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"node still busy after {timeout} s: {counts}")
            await asyncio.sleep(poll)

    def progress(self) -> Progress:
        """Current counters (cheap; safe to call often)."""
        d, w = self.dispatcher, self.writer
        return Progress(
            succeeded=d.stats.succeeded if d else 0,
            failed=d.stats.failed if d else 0,
            reclaimed=d.stats.reclaimed if d else 0,
            in_flight=d.in_flight if d else 0,
            workers=d.worker_count if d else 0,
            commits=w.stats.commits if w else 0,
            ops=w.stats.ops if w else 0,
            worker_restarts=self.worker_restarts,
            malformed=sum(d.stats.malformed.values()) if d else 0,
            stale_acks=w.stats.stale_acks if w else 0,
            lost_workers=d.stats.lost_workers if d else 0,
            journal_error=(getattr(w.journal, "outage", None) or w.stats.last_error) if w else None,
        )

    async def tree(self) -> dict[str, Any]:
        """The live supervision tree as nested maps: ``id``, ``type``, ``kind`` (actor or
        process), ``pid``, ``state``, ``restarts``, ``strategy`` (supervisors), ``children``."""
        if self.root is None:
            raise RuntimeError("node not started")
        return await describe(self, self.root)

    def worker_pids(self) -> list[int]:
        """Pids of the running worker processes."""
        return list(self._workers)

    @property
    def worker_restarts(self) -> int:
        """Worker processes started beyond the first `workers.processes`."""
        return max(0, self.worker_starts - self.config.workers.processes)

    @property
    def journal_path(self) -> Path:
        """The SQLite file of this node's journal."""
        return self.config.sqlite_path


class _CurrentWriter:
    """Forwards a queue ref's enqueues to the node's current journal writer."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    def enqueue(self, job: Any, callback: Any = None) -> None:
        writer = self._node.writer
        if writer is None:
            raise JournalError("the node is not running")
        writer.enqueue(job, callback)


def _cause(exc: StartFailed) -> BaseException:
    """The error under nested `StartFailed`s (e.g. the journal's own `JournalLocked`)."""
    reason: object = exc
    while isinstance(reason, StartFailed):
        reason = reason.reason
    if isinstance(reason, BaseException):
        return reason
    return NodeFailed(f"the node's tree failed to start: {exc}")
