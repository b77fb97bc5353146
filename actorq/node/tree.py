"""The node's supervision tree: which actor does what, and how each is restarted.

::

    node                       root supervisor    [supervision] strategy (one_for_one)
    ├── core                   supervisor         [supervision] core_strategy (rest_for_one)
    │   ├── journal-writer     actor: owns the journal on its thread; group commit
    │   ├── dispatcher         actor: ROUTER socket; leases for workers; collects acks
    │   ├── scheduler          actor: promotes due jobs, wakes the dispatcher
    │   ├── listener           actor (PostgreSQL only): LISTEN/NOTIFY wakes the dispatcher
    │   └── leader             actor: this node's claim on duties that run once (rescue)
    └── workers                supervisor         simple_one_for_one (the dynamic pool)
        └── worker × processes OS processes (actorq.jobs.worker), permanent

Why this shape:

* ``core`` is ``rest_for_one`` because each role holds the one before it: the
  dispatcher submits to the writer it was started with, the scheduler to both.
  A new writer therefore means a new dispatcher and scheduler; a new
  dispatcher means a new scheduler; a scheduler restart touches nothing else.
* Workers are *not* under ``core``. They depend on the dispatcher's address,
  not on its incarnation: a restarted dispatcher binds the same endpoint, the
  workers' sockets reconnect, and each worker re-announces the jobs it holds
  (the dispatcher reclaims the rest of that worker's leases). So a dispatcher
  or writer crash costs no worker restart and no running job.
* The root is ``one_for_one`` over the two: a pool that exceeds its restart
  intensity (workers crash-looping) is restarted by the root without touching
  the journal writer, up to the root's own intensity; past that the node stops
  and ``actorq run`` exits 1 (OTP escalation).
* Stop order is the reverse of start order: the worker pool first (each
  worker gets SIGTERM, finishes its running jobs within
  ``workers.shutdown_timeout`` and sends its last acks to the still-running
  dispatcher), then the scheduler, the dispatcher, and last the writer, which
  commits everything it was given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from actorq._kernel.actor import Actor
from actorq.errors import JournalError
from actorq.jobs import journal_writer as jw
from actorq.jobs.dispatcher import Dispatcher
from actorq.jobs.leader import Leadership
from actorq.jobs.scheduler import Scheduler
from actorq.supervisors import (
    ActorChild,
    Backoff,
    ChildSpec,
    SupervisorRef,
    SupFlags,
    actor_start,
    current_system,
    process_start,
    start_supervisor,
    supervisor_spec,
)

if TYPE_CHECKING:
    from actorq.node.node import Node

logger = logging.getLogger(__name__)

__all__ = ["build_tree"]

NODE, CORE, WORKERS = "node", "core", "workers"
WRITER, DISPATCHER, SCHEDULER, WORKER = "journal-writer", "dispatcher", "scheduler", "worker"
LISTENER, LEADER = "listener", "leader"
RESCUE = "rescue"  # the duty of reclaiming expired leases, whoever held them


class JournalWriterActor(Actor):
    """Runs the node's `JournalWriter`; crashes if the writer thread ends unexpectedly."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.writer: jw.JournalWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def on_start(self) -> None:
        node = self.node
        old = node.writer
        if old is not None:  # an earlier incarnation that was killed before its on_stop ran
            await old.stop()
        cfg = node.config
        writer = jw.JournalWriter(node._open_journal, asyncio.get_running_loop(),
                                  batch_max=cfg.journal.batch_max, on_enqueued=node._on_enqueued)
        await writer.start()
        self.writer = node.writer = writer
        await node._after_writer_start(writer)
        self._watch = asyncio.get_running_loop().create_task(self._watch_thread(writer))

    async def _watch_thread(self, writer: jw.JournalWriter) -> None:
        await asyncio.shield(writer.finished)
        if not self._stopping:
            self.system.exit(self.ref, JournalError("the journal writer thread ended unexpectedly"))

    async def on_stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self.writer is not None:
            await self.writer.stop()


class DispatcherActor(Actor):
    """Runs the node's `Dispatcher`; an unexpected error in it crashes this actor."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.dispatcher: Dispatcher | None = None

    def on_start(self) -> None:
        node = self.node
        if node.dispatcher is not None:  # an earlier incarnation that was killed: free the endpoint
            node.dispatcher.close()
        cfg = node.config
        assert node.writer is not None
        dispatcher = Dispatcher(node.writer, asyncio.get_running_loop(), node.endpoint,
                                lease_timeout=cfg.dispatcher.lease_timeout,
                                heartbeat_timeout=cfg.workers.heartbeat_timeout,
                                fail_tasks=node.fail_tasks,
                                max_frame_bytes=cfg.dispatcher.max_frame_bytes,
                                is_leader=node.is_leader)
        dispatcher.on_error = lambda exc: self.system.exit(self.ref, exc)
        if node._stopping:
            dispatcher.stop_leasing()
        dispatcher.start()
        dispatcher.take_over(node.dispatcher, node._orphans)
        node._orphans.clear()
        self.dispatcher = node.dispatcher = dispatcher

    def on_stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.drain()  # the last acks of workers that already stopped
            self.dispatcher.close()


class SchedulerActor(Actor):
    """Runs the node's `Scheduler` (promotes due jobs, wakes the dispatcher), and on SQLite
    keeps the WAL bounded (E9): readers that never let go starve SQLite's own passive
    checkpoints, so past ``journal.wal_limit_mb`` it asks the writer for a TRUNCATE checkpoint."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.scheduler: Scheduler | None = None
        self._wal_watch: asyncio.Task[None] | None = None

    def on_start(self) -> None:
        node = self.node
        assert node.writer is not None
        loop = asyncio.get_running_loop()
        scheduler = Scheduler(node.writer, loop, node.config.dispatcher.poll_interval, node._wake)
        scheduler.start()
        self.scheduler = node.scheduler = scheduler
        if node.config.is_sqlite:
            self._wal_watch = loop.create_task(self._watch_wal(node.writer))

    async def _watch_wal(self, writer: jw.JournalWriter) -> None:
        cfg = self.node.config
        wal = cfg.sqlite_path.with_name(cfg.sqlite_path.name + "-wal")
        limit = cfg.journal.wal_limit_mb * 1024 * 1024
        every = max(1.0, 25 * cfg.dispatcher.poll_interval)
        while True:
            await asyncio.sleep(every)
            try:
                size = wal.stat().st_size
            except OSError:
                continue
            if size <= limit:
                continue
            try:
                busy, _, _ = await writer.call(jw.OUTSIDE, lambda journal: journal.checkpoint("truncate"))
            except Exception as exc:  # the next round tries again
                logger.warning("WAL checkpoint failed: %s", exc)
                continue
            self.node.wal_checkpoints += 1
            logger.info("WAL was %.1f MB: %s", size / 1e6,
                        "readers kept the checkpoint busy; trying again later" if busy else "checkpointed, restarted")

    def on_stop(self) -> None:
        if self._wal_watch is not None:
            self._wal_watch.cancel()
        if self.scheduler is not None:
            self.scheduler.stop()


class ListenerActor(Actor):
    """PostgreSQL only: LISTEN for enqueues on other nodes and clients, and wake the dispatcher.

    A wake-up only: polling (the scheduler's tick) stays the correctness path. The
    listener's own thread reconnects with backoff when its connection is lost.
    """

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.listener: Any = None

    async def on_start(self) -> None:
        from actorq.journal import Listener

        node = self.node
        loop = asyncio.get_running_loop()

        def notified(queue: str | None) -> None:  # on the listener's thread
            loop.call_soon_threadsafe(node._wake, None if queue is None else {queue})

        self.listener = Listener(node.config.journal.url, notified, schema=node.config.journal.schema)
        self.listener.start()

    async def on_stop(self) -> None:
        if self.listener is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.listener.stop)


class LeaderActor(Actor):
    """Holds this node's claim on the duties that run once among nodes (see `actorq.jobs.leader`)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.leadership: Leadership | None = None

    def on_start(self) -> None:
        node = self.node
        writer = node.writer
        assert writer is not None

        async def try_lead(name: str, holder: str, ttl: float) -> bool:
            return bool(await writer.call(jw.CALL, lambda journal: journal.try_lead(name, holder, ttl)))

        async def resign(name: str, holder: str) -> object:
            return await writer.call(jw.CALL, lambda journal: journal.resign(name, holder))

        holder = f"{node.config.node.name}/{os.getpid()}/{secrets.token_hex(8)}"
        self.leadership = node.leadership = Leadership(RESCUE, holder, node.config.node.leader_ttl,
                                                       try_lead, resign)
        self.leadership.start()

    async def on_stop(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()


def _shutdown(seconds: float) -> float | str:
    return seconds if seconds > 0 else "brutal_kill"


def build_tree(node: "Node") -> tuple[SupFlags, list[ChildSpec]]:
    """The root supervisor's flags and children for `node` (see the module docstring)."""
    cfg = node.config
    sup, workers = cfg.supervision, cfg.workers
    core = supervisor_spec(
        CORE,
        SupFlags(sup.core_strategy, sup.core_intensity, sup.core_period),
        [
            ChildSpec(WRITER, actor_start(JournalWriterActor, node, name=WRITER), shutdown="infinity"),
            ChildSpec(DISPATCHER, actor_start(DispatcherActor, node, name=DISPATCHER), shutdown=10.0),
            ChildSpec(SCHEDULER, actor_start(SchedulerActor, node, name=SCHEDULER)),
            *([] if cfg.is_sqlite else [ChildSpec(LISTENER, actor_start(ListenerActor, node, name=LISTENER))]),
            ChildSpec(LEADER, actor_start(LeaderActor, node, name=LEADER)),
        ],
        name=CORE,
    )
    backoff = Backoff(workers.restart_backoff, cap=max(30.0, workers.restart_backoff)) if workers.restart_backoff else None
    pool_flags = SupFlags("simple_one_for_one", workers.intensity, workers.period, backoff=backoff)
    worker = ChildSpec(WORKER, node._start_worker, shutdown=_shutdown(workers.shutdown_timeout))

    async def start_pool() -> ActorChild:
        system = current_system()
        ref = await start_supervisor(system, pool_flags, [worker], name=WORKERS, on_child_exit=node._on_worker_exit)
        assert isinstance(ref, SupervisorRef)
        try:
            for _ in range(workers.processes):
                await ref.start_child(())
        except BaseException:
            await ref.stop()
            raise
        return ActorChild(system, ref.ref, supervisor=ref)

    pool = ChildSpec(WORKERS, start_pool, type="supervisor")
    root = SupFlags(sup.strategy, sup.intensity, sup.period)
    return root, [core, pool]


STRATEGIES = {WORKERS: "simple_one_for_one"}


async def describe(node: "Node", root: SupervisorRef) -> dict[str, Any]:
    """The live tree as nested maps (what ``actorq tree`` prints)."""
    cfg = node.config
    strategies = {NODE: cfg.supervision.strategy, CORE: cfg.supervision.core_strategy, **STRATEGIES}

    async def children(sup: SupervisorRef) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for info in await sup.which_children():
            item: dict[str, Any] = {
                "id": info.id, "type": info.type, "restart": info.restart, "state": info.state,
                "restarts": info.restarts, "kind": "process" if isinstance(info.pid, int) else "actor",
                "pid": info.pid if isinstance(info.pid, int) else None, "children": [],
            }
            if info.supervisor is not None:
                item["strategy"] = strategies.get(info.id, "")
                if info.state == "running":
                    item["children"] = await children(info.supervisor)
            out.append(item)
        return out

    return {"id": NODE, "name": cfg.node.name, "type": "supervisor", "strategy": strategies[NODE],
            "kind": "actor", "pid": os.getpid(), "state": "stopping" if node._stopping else "running",
            "restarts": 0, "children": await children(root)}
