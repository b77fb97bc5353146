"""`Node`: one actorq node, its tree built from a `Config`.

::

    Node
    ├── journal writer      thread; owns the journal; group commit
    ├── dispatcher          ROUTER socket; leases for workers with credit; collects acks
    ├── scheduler           promotes due jobs; wakes the dispatcher
    └── worker pool         permanent OS processes (actorq.jobs.worker)

Start order is the list order; stop is the reverse, gracefully: the scheduler
stops, the dispatcher takes no new leases and asks workers to stop, workers
give back jobs they had not started and finish the running ones within
``workers.shutdown_timeout`` (then are killed and their jobs reclaimed),
and the writer commits everything it was given before it closes.

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

from actorq.errors import ActorQError
from actorq.jobs import journal_writer as jw
from actorq.jobs.dispatcher import Dispatcher
from actorq.jobs.queue import QueueRef
from actorq.jobs.scheduler import Scheduler
from actorq.jobs.worker import WORKER_BOOT, WorkerSpec, check_tasks
from actorq.journal.protocol import Journal
from actorq.journal.sqlite import SQLiteJournal
from actorq.node.config import Config, load_config
from actorq.node.control import ControlServer, NodeNotRunning, read_node_file, write_node_file
from actorq.transports import constants as wire
from actorq.supervisors.process import ChildExit, ProcessPool
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


class Node:
    """One node: journal writer, dispatcher, scheduler and worker pool.

    Args:
        config: the validated topology.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.writer: jw.JournalWriter | None = None
        self.dispatcher: Dispatcher | None = None
        self.scheduler: Scheduler | None = None
        self.pool: ProcessPool | None = None
        self.endpoint = ""
        self._ipc_dir: str | None = None
        self._started = False
        self._stopped: asyncio.Future[None] | None = None
        self._stopping = False
        self.failure: str | None = None
        self.reclaimed_at_start = 0
        self.fail_tasks: tuple[str, ...] = ()
        self.control: ControlServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps only weak ones

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "Node":
        """Build a node from a ``topology.toml`` file (raises `ConfigError`)."""
        return cls(load_config(path))

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Open the journal, reclaim earlier incarnations' leases, start every role. Idempotent.

        Raises:
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
        self.writer = jw.JournalWriter(self._open_journal, loop, batch_max=cfg.journal.batch_max,
                                       on_enqueued=self._on_enqueued)
        try:
            await self.writer.start()
            self.fail_tasks = tuple(sorted(name for name, on_crash in tasks.items() if on_crash == "fail"))
            # An SQLite journal has one node (file lock): every lease left in it is from an earlier
            # run, whatever its name. A shared journal: only this node's own earlier incarnations.
            owner_prefix = "" if cfg.journal.url.startswith("sqlite:") else f"{cfg.node.name}/"
            self.reclaimed_at_start = await self.writer.call(
                jw.RECLAIM_ALL, ("node restarted (lease of an earlier incarnation)", owner_prefix, self.fail_tasks))
            if self.reclaimed_at_start:
                logger.warning("reclaimed %d jobs leased by an earlier run of this node", self.reclaimed_at_start)
            self._ipc_dir = private_ipc_dir()
            self.endpoint = cfg.node.endpoint or f"ipc://{self._ipc_dir}/dispatcher"
            self.dispatcher = Dispatcher(self.writer, loop, self.endpoint,
                                         lease_timeout=cfg.dispatcher.lease_timeout,
                                         heartbeat_timeout=cfg.workers.heartbeat_timeout,
                                         fail_tasks=self.fail_tasks,
                                         max_frame_bytes=cfg.dispatcher.max_frame_bytes)
            self.dispatcher.start()
            self.scheduler = Scheduler(self.writer, loop, cfg.dispatcher.poll_interval, self.dispatcher.wake)
            self.pool = ProcessPool(cfg.workers.processes, self._worker_argv, on_exit=self._on_worker_exit,
                                    intensity=cfg.workers.intensity, period=cfg.workers.period)
            await self.pool.start()
            assert self.pool.failed is not None
            self.pool.failed.add_done_callback(self._on_pool_failed)
            self.scheduler.start()
            self._start_control(loop)
        except BaseException:
            await self._teardown()
            raise
        logger.info("node %s started: journal %s, %d worker processes, endpoint %s",
                    cfg.node.name, cfg.journal.url, cfg.workers.processes, self.endpoint)

    def _open_journal(self) -> Journal:
        cfg = self.config
        journal = SQLiteJournal(cfg.sqlite_path, synchronous=cfg.journal.synchronous,
                                busy_timeout=cfg.journal.busy_timeout)
        try:
            journal.attach_node()
        except BaseException:
            journal.close()
            raise
        return journal

    def _worker_argv(self, slot: int, incarnation: str) -> list[str]:
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

    def owner_of(self, pid: int, incarnation: str) -> str:
        """The lease owner id of a worker process (node, process, incarnation)."""
        return f"{self.config.node.name}/{pid}/{incarnation}"

    def _on_worker_exit(self, event: ChildExit) -> None:
        if self.dispatcher is not None:
            self.dispatcher.worker_exited(self.owner_of(event.pid, event.incarnation), event.reason)

    def _on_enqueued(self, queues: set[str]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake(queues)

    def _on_pool_failed(self, fut: asyncio.Future[str]) -> None:
        if fut.cancelled():
            return
        self.failure = fut.result()
        task = asyncio.get_running_loop().create_task(self.stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop gracefully (see the module docstring). Idempotent; safe before `start`."""
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
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop_leasing()
            self.dispatcher.request_workers_stop()
        if self.pool is not None:
            await self.pool.wait_stopped(self.config.workers.shutdown_timeout)
        if self.dispatcher is not None:
            self.dispatcher.drain()
            self.dispatcher.close()
        if self.writer is not None:
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
        return QueueRef(name, self.writer, self.writer.loop,
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
        d, w, p = self.dispatcher, self.writer, self.pool
        return Progress(
            succeeded=d.stats.succeeded if d else 0,
            failed=d.stats.failed if d else 0,
            reclaimed=d.stats.reclaimed if d else 0,
            in_flight=d.in_flight if d else 0,
            workers=d.worker_count if d else 0,
            commits=w.stats.commits if w else 0,
            ops=w.stats.ops if w else 0,
            worker_restarts=p.restarts if p else 0,
            malformed=sum(d.stats.malformed.values()) if d else 0,
        )

    async def tree(self) -> dict[str, object]:
        """The live tree as nested maps: ``id``, ``type``, ``pid``, ``state``, ``restarts``, ``children``."""
        def role(name: str, up: bool) -> dict[str, object]:
            return {"id": name, "type": "worker", "kind": "actor", "pid": None,
                    "state": "running" if up else "stopped", "restarts": 0, "children": []}

        workers = [{"id": "worker", "type": "worker", "kind": "process", "pid": pid, "state": "running",
                    "restarts": 0, "children": []} for pid in self.worker_pids()]
        return {
            "id": self.config.node.name, "type": "supervisor", "strategy": "one_for_one", "pid": os.getpid(),
            "state": "stopping" if self._stopping else "running", "restarts": 0,
            "children": [
                role("journal-writer", self.writer is not None),
                role("dispatcher", self.dispatcher is not None),
                role("scheduler", self.scheduler is not None),
                {"id": "workers", "type": "supervisor", "strategy": "simple_one_for_one", "pid": None,
                 "state": "running", "restarts": self.pool.restarts if self.pool else 0, "children": workers},
            ],
        }

    def worker_pids(self) -> list[int]:
        """Pids of the running worker processes."""
        return self.pool.pids() if self.pool else []

    @property
    def journal_path(self) -> Path:
        """The SQLite file of this node's journal."""
        return self.config.sqlite_path
