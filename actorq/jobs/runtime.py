"""The job runtime of one node: its roles, the relays between them, and its worker processes.

::

    JobRuntime
    ├── roles (each an actor a supervisor starts, stops and restarts; see `core_children`)
    │   journal-writer  JournalWriter: owns the journal on its thread, group commit, settles attempts;
    │                   on a shared journal, a second one (the duty writer) on a connection of its own
    │   dispatcher      Dispatcher: ROUTER socket, leases for workers, collects their acks
    │   scheduler       Scheduler: promotes due jobs, rescues expired leases (leader), maintains the journal;
    │                   Cron: fires the journal's schedules (leader)
    │   listener        Listener (journals that notify: PostgreSQL): other producers' jobs wake the
    │                   dispatcher, cancels stop the jobs at once, ended jobs wake result waiters
    │   leader          Leadership: this node's claim on the duties that run once among nodes
    │   producers       ProducerServer: ROUTER socket, other processes' enqueues through the writer,
    │                   their result waits (held as result waiters) and cancels
    ├── relays          enqueue commits, promotions and notifications ──▶ dispatcher.wake
    │                   a worker's exit ──▶ dispatcher.worker_exited (or kept for the next dispatcher)
    └── worker processes  `start_worker` (the pool's start function), `worker_exited` (its exit hook)

On a journal shared by several nodes (PostgreSQL), the writer role runs two
writers, each with its own connection: the main one takes the dispatcher's
work (enqueues, leases, acks, renewals), the duty writer the scheduler's and
the leader's (promotion, the rescue of expired leases, leadership). A rescue
of thousands of rows, or a wait on a lock another node holds, so never delays
an ack. On SQLite both are one writer: the file has one writer anyway.

Each role depends on the ones before it (the dispatcher submits to the writer it
was started with, the scheduler to both), so the node supervises them
``rest_for_one`` in this order. Each role, when (re)started, takes the runtime's
current incarnation of the roles before it; the runtime keeps the current one of
each, which is what its relays, `queue` refs and `progress` use.

The runtime also holds the tasks' declared policies (`TaskPolicy`, read from the
task registries by `actorq.jobs.worker.check_tasks`): the writer's `decide`
applies them to every attempt's end, queue refs apply them to every job
enqueued through the node, and the journal's task catalog gets them at start
so that producers in other processes can apply them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import operator
import os
import random
import secrets
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

import zmq

from actorq._kernel.actor import Actor
from actorq.errors import JournalError
from actorq.jobs import journal_writer as jw
from actorq.jobs.dispatcher import Dispatcher, DispatcherStats
from actorq.jobs.events import EventHub
from actorq.jobs.leader import Leadership
from actorq.jobs.outcome import DEFAULT_POLICY, AttemptEnd, Outcome, TaskPolicy, decide
from actorq.jobs.node_file import NodeNotRunning, listener_pid
from actorq.jobs.producers import EndpointUnusable, ProducerServer
from actorq.jobs.queue import QueueRef
from actorq.jobs.cron import Cron, Schedules, sync_file_schedules
from actorq.jobs.schedule import Schedule
from actorq.jobs.scheduler import Scheduler
from actorq.jobs.results import ResultWaiters, done_ids
from actorq.jobs.settings import DispatcherConfig, NodeConfig, ProducersConfig, ResultsConfig, WorkersConfig
from actorq.jobs.wire import payload_budget
from actorq.jobs.worker import EXIT_REPLACED, WORKER_BOOT, WorkerSpec
from actorq.journal.backends import journal_class, open_journal_config
from actorq.journal.config import JournalConfig
from actorq.journal.protocol import (
    LIVE_STATES, Attempt, BreakerState, Journal, NewJob, QueueLimits, QueueStats, TaskDefaults,
)
from actorq.supervisors import ChildSpec, Exit, ProcessChild, actor_start, process_start
from actorq.transports.zmq import private_ipc_dir

logger = logging.getLogger(__name__)

__all__ = ["JOURNAL_WAIT_REPORTED", "JobRuntime", "Progress"]

WRITER, DISPATCHER, SCHEDULER, LISTENER, LEADER, PRODUCERS, WORKER = (
    "journal-writer", "dispatcher", "scheduler", "listener", "leader", "producers", "worker")
RESCUE = "rescue"  # the duty of reclaiming expired leases, whoever held them
MAINTAIN_EVERY_TICKS = 25  # journal maintenance every 25 scheduler ticks, at least every second
EXITS_KEPT = 1000
JOURNAL_WAIT_REPORTED = 1.0  # seconds a journal write may take before the node reports it as waiting


@dataclass(frozen=True)
class Progress:
    """A snapshot of a node's counters, over its life: a restart of a role never sets one back.

    ``succeeded`` and ``failed`` (attempts that raised, were discarded or could not run)
    count what the journal stored, never what a worker or a peer claimed: an ack the
    journal fenced counts in ``stale_acks`` only.
    """

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
    journal_wait: float = 0.0
    """Seconds the journal writer's current group has been under way (0 when none is): a
    write waiting on a lock or a slow disk shows here."""
    idle: bool = False
    """Nothing to do: no job in flight, no write waiting (`JOURNAL_WAIT_REPORTED`), and the
    last lease of every worker's queues found none ready."""
    producer_requests: int = 0
    """ENQUEUE requests of producers in other processes admitted (`ProducerServer.accepted`)."""
    producer_jobs: int = 0
    """The jobs of those requests."""
    producer_busy: int = 0
    """Producer requests answered BUSY (nothing done; the producer sends them again)."""
    producer_dropped: Mapping[str, int] = field(default_factory=dict)
    """Producer frames dropped as malformed, by reason (`ProducerServer.dropped`)."""


class JobRuntime:
    """One node's job runtime (see the module docstring).

    Args:
        node: the ``[node]`` settings (name, task registries, endpoint, leader TTL).
        journal: the ``[journal]`` settings.
        dispatcher: the ``[dispatcher]`` settings.
        workers: the ``[workers]`` settings.
        search_path: where worker processes import task modules from.
        tasks: ``{task name: declared policy}`` of every registered task.
        producers: the ``[producers]`` settings (default: the endpoint in the private directory).
        results: the ``[results]`` settings.
        schedules: the ``[[schedules]]`` of the node's file, written to the journal at start.
        clock: the wall clock of the cron schedules (injectable for tests).
    """

    def __init__(self, *, node: NodeConfig, journal: JournalConfig, dispatcher: DispatcherConfig,
                 workers: WorkersConfig, search_path: list[str], tasks: Mapping[str, TaskPolicy],
                 producers: ProducersConfig = ProducersConfig(), schedules: Sequence[Schedule] = (),
                 clock: Callable[[], float] = time.time, results: ResultsConfig = ResultsConfig(),
                 queues: Sequence[QueueLimits] = ()) -> None:
        self.node = node
        self.queue_limits = tuple(queues)
        self.journal_config = journal
        self.dispatcher_config = dispatcher
        self.workers_config = workers
        self.producers_config = producers
        self.results_config = results
        self.waiters = ResultWaiters(self.submit)  # outlives the writers: each new one is pointed at it
        self.search_path = search_path
        self.tasks = dict(tasks)
        self.file_schedules = tuple(schedules)
        self.clock = clock
        self.schedules = Schedules(lambda: self._writer, clock=clock,
                                   max_payload=payload_budget(dispatcher.max_frame_bytes))
        """The journal's schedules (add, remove, list), through the current writer."""
        self.backend = journal_class(journal.url)
        self.endpoint = ""
        self._ipc_dir: str | None = None
        # the current incarnation of each role (replaced when its supervisor restarts it)
        self._writer: jw.JournalWriter | None = None
        self._duty: jw.JournalWriter | None = None  # the same writer unless the journal is shared
        self._dispatcher: Dispatcher | None = None
        self._scheduler: Scheduler | None = None
        self._cron: Cron | None = None
        self._leadership: Leadership | None = None
        self._producers: ProducerServer | None = None
        self._reclaimed = False
        self._stopping = False
        self._orphans: list[tuple[str, str]] = []  # (owner, why) of workers that died with no dispatcher
        self._workers: dict[int, ProcessChild] = {}  # pid -> the running worker processes
        self._launch_worker = process_start(self._worker_argv)
        # the counts of the writers and dispatchers replaced so far, so that `progress` never goes back
        self._carried: Counter[str] = Counter()
        self._producer_drops: Counter[str] = Counter()  # of the producer endpoints replaced so far
        self._dispatcher_drops: Counter[str] = Counter()  # of the dispatchers replaced so far
        self.reclaimed_at_start = 0
        self.worker_starts = 0
        self.worker_exits: list[tuple[int, str]] = []  # (pid, exit reason), newest last (bounded)
        self.events = EventHub()
        """The node events (`actorq.jobs.events`): its writers, dispatchers and this runtime emit them."""
        self.cancelled = 0
        """Jobs cancelled through this node (`cancel`) that had not finished."""
        # the commit-time and group-size histograms of the writers replaced so far
        self._carried_commits = [0] * (len(jw.COMMIT_BUCKETS) + 1)
        self._carried_groups = [0] * (len(jw.GROUP_BUCKETS) + 1)
        self._carried_commit_sum = 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Make the private directory for the runtime's sockets and choose the dispatcher endpoint."""
        if self._ipc_dir is None:
            self._ipc_dir = private_ipc_dir()
            self.endpoint = self.node.endpoint or f"ipc://{self._ipc_dir}/dispatcher"

    def socket_path(self, name: str) -> str:
        """An ``ipc://`` endpoint named `name` in the runtime's private directory (after `open`)."""
        if self._ipc_dir is None:
            raise RuntimeError("the job runtime is not open")
        return f"ipc://{self._ipc_dir}/{name}"

    def begin_stop(self) -> None:
        """Take no new leases from now on (graceful stop); acks are still collected."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.stop_leasing()

    @property
    def stopping(self) -> bool:
        """True once `begin_stop` was called."""
        return self._stopping

    @property
    def writers(self) -> list[jw.JournalWriter]:
        """The current journal writers, each once: the duty writer (on a shared journal), then the main one."""
        return list({id(w): w for w in (self._duty, self._writer) if w is not None}.values())

    async def stop_writers(self) -> None:
        """Stop the journal writers (the writer role's stop): every op submitted so far is applied. Idempotent."""
        for writer in self.writers:
            await writer.stop()

    async def close(self) -> None:
        """Stop the writers if a role left them open, and remove the private directory and a
        fixed ipc producer endpoint's socket file (libzmq leaves it behind). Idempotent."""
        await self.stop_writers()  # never left open, whatever happened to the tree
        fixed = self.producers_config.endpoint
        if fixed.startswith("ipc://") and self._ipc_dir is not None:
            with contextlib.suppress(NodeNotRunning, OSError):
                if listener_pid(fixed) in (None, os.getpid()):  # ours, or nobody's: never another node's
                    os.unlink(fixed[len("ipc://"):])
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    # -- the roles, in the order the node supervises them (rest_for_one) ---------------------------
    def core_children(self) -> list[ChildSpec]:
        """The roles as child specs: writer, dispatcher, scheduler, (listener), leader, producers.

        The producer endpoint needs only the writer (its commits wake the dispatcher through
        the relay), so it comes last: its restart restarts no other role, and at stop it is
        the first to go, answering what it admitted while the writer still runs.
        """
        return [
            ChildSpec(WRITER, actor_start(JournalWriterRole, self, name=WRITER), shutdown="infinity"),
            ChildSpec(DISPATCHER, actor_start(DispatcherRole, self, name=DISPATCHER), shutdown=10.0),
            ChildSpec(SCHEDULER, actor_start(SchedulerRole, self, name=SCHEDULER)),
            *([ChildSpec(LISTENER, actor_start(ListenerRole, self, name=LISTENER))] if self.backend.notifies else []),
            ChildSpec(LEADER, actor_start(LeaderRole, self, name=LEADER)),
            ChildSpec(PRODUCERS, actor_start(ProducersRole, self, name=PRODUCERS), shutdown=10.0),
        ]

    @property
    def writer(self) -> jw.JournalWriter | None:
        """The current journal writer (None before the first start)."""
        return self._writer

    @property
    def duty_writer(self) -> jw.JournalWriter | None:
        """The writer of the scheduler's and leader's duties: `writer` itself unless the journal is
        shared, then a second writer on a connection of its own (None before the first start)."""
        return self._duty

    @property
    def dispatcher(self) -> Dispatcher | None:
        """The current dispatcher (None before the first start)."""
        return self._dispatcher

    @property
    def scheduler(self) -> Scheduler | None:
        """The current scheduler (None before the first start)."""
        return self._scheduler

    @property
    def leadership(self) -> Leadership | None:
        """The current leadership claim (None before the first start)."""
        return self._leadership

    def _open_journal(self, purpose: str = "journal") -> Journal:
        config = self.journal_config
        if self.backend.shared:  # bounded waits, scaled to the lease (see JournalConfig)
            lock, idle = config.session_limits(self.dispatcher_config.lease_timeout)
            config = dataclasses.replace(config, lock_timeout=lock, idle_in_transaction_timeout=idle)
        journal = open_journal_config(config, application_name=f"actorq {self.node.name} {purpose}",
                                      purpose="journal" if purpose == "journal" else f"journal ({purpose})")
        try:
            journal.attach_node()
        except BaseException:
            journal.close()
            raise
        return journal

    async def start_writer(self) -> jw.JournalWriter:
        """Open the journal on a new writer thread (the writer role's start).

        On the node's first writer, the jobs still leased by earlier runs of this node
        are reclaimed, and the tasks' declarations go to the journal's task catalog.

        Raises:
            JournalError: the journal cannot be opened, or another node holds it.
        """
        previous = self.writers
        await self.stop_writers()  # an earlier incarnation killed before its on_stop ran
        loop = asyncio.get_running_loop()
        writer = jw.JournalWriter(self._open_journal, loop, batch_max=self.journal_config.batch_max,
                                  on_enqueued=self.wake, decide=self.decide)
        writer.watched, writer.on_outcome = self.waiters.watched, self.waiters.resolve
        await writer.start()
        duty = writer
        if self.backend.shared:
            duty = jw.JournalWriter(functools.partial(self._open_journal, "duties"), loop,
                                    batch_max=self.journal_config.batch_max, on_enqueued=self.wake,
                                    decide=self.decide)
            duty.watched, duty.on_outcome = self.waiters.watched, self.waiters.resolve
            try:
                await duty.start()
            except BaseException:
                await writer.stop()
                raise
        # every new writer's journal: the file's queue limits stored (the file wins) and this
        # node's node_concurrency kept for its leases, before the dispatcher leases through it
        prefix = f"{self.node.name}/" if self.backend.shared else ""
        for each in {writer, duty}:
            await each.call(jw.CALL, operator.methodcaller("declare_queues", self.queue_limits, prefix))
        for old in previous:
            self._carried.update(_writer_counts(old.stats))
            self._carry_histograms(old.stats)
        writer.events = duty.events = self.events
        self._writer, self._duty = writer, duty
        if not self._reclaimed:  # a restarted writer: live workers still hold their leases
            await self._first_start(writer)
        return writer

    async def _first_start(self, writer: jw.JournalWriter) -> None:
        # A journal with one node (SQLite's file lock): every lease in it is from an earlier run,
        # whatever its name. A shared journal: only this node's own earlier incarnations.
        prefix = f"{self.node.name}/" if self.backend.shared else ""
        reclaim = jw.Reclaim(AttemptEnd.CRASHED, "node restarted (lease of an earlier incarnation)", prefix=prefix)
        self.reclaimed_at_start = await writer.call(jw.RECLAIM, reclaim)
        declared = [TaskDefaults(name, p.queue, p.priority, p.max_attempts, p.unique_for, p.concurrency_limit,
                                 p.on_conflict, p.concurrency, p.rate, p.burst, p.circuit_breaker,
                                 p.key_rate, p.key_burst, p.key_circuit_breaker)
                    for name, p in sorted(self.tasks.items())]
        if declared:
            await writer.call(jw.CALL, operator.methodcaller("declare_tasks", declared))
        # the file's schedules replace those of their names; those an earlier file had are removed
        gone = await writer.call(jw.CALL, functools.partial(_sync_schedules, self.file_schedules, self.clock()))
        if gone:
            logger.info("schedules no longer in the topology file removed: %s", ", ".join(gone))
        self._reclaimed = True
        if self.reclaimed_at_start:
            logger.warning("reclaimed %d jobs leased by an earlier run of this node", self.reclaimed_at_start)

    def start_dispatcher(self, on_error: Callable[[BaseException], None]) -> Dispatcher:
        """Bind a new dispatcher on the endpoint (the dispatcher role's start).

        It takes over what the previous one could not reclaim and the workers that
        died while none ran. `on_error` gets an unexpected exception from its message
        handling (the role crashes with it).
        """
        previous = self._dispatcher
        if previous is not None:  # an earlier incarnation that was killed: free the endpoint
            previous.close()
        assert self._writer is not None
        dispatcher = Dispatcher(self._writer, asyncio.get_running_loop(), self.endpoint,
                                lease_timeout=self.dispatcher_config.lease_timeout,
                                heartbeat_timeout=self.workers_config.heartbeat_timeout,
                                max_frame_bytes=self.dispatcher_config.max_frame_bytes,
                                worker_capacity=self.workers_config.concurrency + self.workers_config.prefetch)
        # a task with a concurrency of its own leases again when a job finishes, as a limited queue
        # does; so does one with a breaker (a probe's success closes it)
        dispatcher.limited_queues = frozenset(
            [q.queue for q in self.queue_limits if q.concurrency is not None or q.node_concurrency is not None]
            + [p.queue for p in self.tasks.values() if p.concurrency is not None or p.circuit_breaker is not None])
        dispatcher.on_error = on_error
        dispatcher.events = self.events
        if self._stopping:
            dispatcher.stop_leasing()
        if self.node.endpoint.startswith("ipc://"):
            _refuse_if_taken(self.endpoint, "node.endpoint")
        try:
            dispatcher.start()
        except zmq.ZMQError as exc:  # the topology's fixed address: a missing directory, a port in use
            dispatcher.close()
            raise EndpointUnusable(f"cannot serve workers at {self.endpoint}: {exc.strerror or exc}",
                                   "node.endpoint") from None
        dispatcher.take_over(previous, self._orphans)
        self._orphans.clear()
        if previous is not None:
            self._carried.update(_dispatcher_counts(previous.stats))
            self._dispatcher_drops.update(previous.stats.malformed)
        self._dispatcher = dispatcher
        return dispatcher

    def start_scheduler(self) -> Scheduler:
        """Start a new scheduler (the scheduler role's start)."""
        assert self._duty is not None
        poll = self.dispatcher_config.poll_interval
        scheduler = Scheduler(self._duty, asyncio.get_running_loop(), poll, self.wake,
                              maintain_every=max(1.0, MAINTAIN_EVERY_TICKS * poll),
                              rescue_every=self.dispatcher_config.lease_timeout / 3, is_leader=self.is_leader,
                              queues=self.workers_config.queues, retention=self.journal_config.retention)
        scheduler.start()
        self._scheduler = scheduler
        return scheduler

    def start_cron(self) -> Cron:
        """Start firing the journal's schedules, while this node leads (the scheduler role's start)."""
        assert self._duty is not None
        cron = Cron(self._duty, asyncio.get_running_loop(), declared=self.tasks.get, wake=self.wake,
                    is_leader=self.is_leader, clock=self.clock)
        cron.start()
        self._cron = cron
        return cron

    @property
    def cron(self) -> Cron | None:
        """The current cron (None before the first start)."""
        return self._cron

    def start_listener(self) -> Any:
        """Start listening for other producers' jobs (the listener role's start; journals that notify)."""
        from actorq.journal.postgres import Listener, channel_of  # loads psycopg: only journals that notify

        loop = asyncio.get_running_loop()
        schema = self.journal_config.schema

        def notified(queue: str | None) -> None:  # on the listener's thread
            loop.call_soon_threadsafe(self.wake, None if queue is None else {queue})

        def done(payload: str | None) -> None:  # jobs ended, on any node: wake this node's waiters
            if self.waiters.watched:  # else nothing to do (a read of a set's size, safe here)
                loop.call_soon_threadsafe(self.waiters.poke, done_ids(payload))

        def cancelled(_job_id: str | None) -> None:
            loop.call_soon_threadsafe(self.cancel_noticed)

        listener = Listener(self.journal_config.resolved_url, notified, schema=schema,
                            application_name=f"actorq {self.node.name} listener",
                            channels={channel_of(schema, "done"): done, channel_of(schema, "cancel"): cancelled})
        listener.start()
        return listener

    def start_leadership(self) -> Leadership:
        """Start claiming the once-only duties (the leader role's start)."""
        writer = self._duty
        assert writer is not None

        async def try_lead(name: str, holder: str, ttl: float) -> bool:
            return bool(await writer.call(jw.CALL, operator.methodcaller("try_lead", name, holder, ttl)))

        async def resign(name: str, holder: str) -> object:
            return await writer.call(jw.CALL, operator.methodcaller("resign", name, holder))

        holder = f"{self.node.name}/{os.getpid()}/{secrets.token_hex(8)}"
        leadership = Leadership(RESCUE, holder, self.node.leader_ttl, try_lead, resign)
        leadership.start()
        self._leadership = leadership
        return leadership

    @property
    def producers_endpoint(self) -> str:
        """Where producers in other processes send jobs (after `open`; see `actorq.jobs.producers`):
        ``[producers] endpoint``, or else a socket in the private directory."""
        return self.producers_config.endpoint or self.socket_path(PRODUCERS)

    @property
    def producers(self) -> ProducerServer | None:
        """The current producer endpoint (None before the first start)."""
        return self._producers

    def start_producers(self) -> ProducerServer:
        """Bind a new producer endpoint (the producers role's start): ENQUEUE requests go to
        the current writer, each answered after the group commit that holds its jobs.

        An ``ipc://`` socket file is made mode 0600 once bound. A fixed ``ipc://`` endpoint
        another process listens on is refused: binding would take it over (libzmq removes
        the file) and leave that process's producers talking to this node.

        Raises:
            EndpointUnusable: a fixed endpoint is another process's, or cannot be bound.
        """
        previous = self._producers
        if previous is not None:  # an earlier incarnation that was killed: free the endpoint
            previous.close()
            self._carried.update(_producer_counts(previous))
            self._producer_drops.update(previous.dropped.by_reason)
        endpoint = self.producers_endpoint
        if self.producers_config.endpoint.startswith("ipc://"):
            _refuse_if_taken(endpoint)
        server = ProducerServer(asyncio.get_running_loop(), endpoint, self.enqueue,
                                max_frame_bytes=self.dispatcher_config.max_frame_bytes,
                                backlog=lambda: self._writer.backlog if self._writer is not None else 0,
                                wait=self.waiters.outcome, cancel=self.cancel)
        try:
            server.start()
            if endpoint.startswith("ipc://"):  # a socket needs write permission to connect to
                os.chmod(endpoint[len("ipc://"):], 0o600)
        except (zmq.ZMQError, OSError) as exc:
            server.close()
            raise EndpointUnusable(f"cannot serve producers at {endpoint}: {exc.strerror or exc}") from None
        self._producers = server
        return server

    # -- relays ------------------------------------------------------------------------------------
    def wake(self, queues: set[str] | None, leased: Collection[str] = ()) -> None:
        """Ready jobs may exist in `queues` (None: any queue): the current dispatcher leases for idle
        workers, except the owners in `leased`, whose leases already saw them."""
        if self._dispatcher is not None:
            self._dispatcher.wake(queues, leased)

    def is_leader(self) -> bool:
        """Whether this node leads the duties that run once among nodes (rescue of expired leases)."""
        return self._leadership is not None and self._leadership.is_leader()

    def decide(self, attempt: Attempt, end: AttemptEnd, delay: float | None = None) -> Outcome:
        """What `end` of `attempt` means for its job, by its task's declared policy and the
        worker's `delay`, if it sent one (the writer's `decide`)."""
        policy = self.tasks.get(attempt.task, DEFAULT_POLICY)
        return decide(policy, end, attempt.attempt, attempt.max_attempts, random.random(), delay)

    # -- worker processes ----------------------------------------------------------------------------
    def worker_child(self) -> ChildSpec:
        """The worker pool's child: one worker process, stopped within ``workers.shutdown_timeout``.

        A worker that exits `EXIT_REPLACED` (a sync task overran its time limit, or a
        cancelled one its grace) is replaced outside ``workers.intensity``: a task that
        always overruns ends its job dead after its attempts, and never restarts the pool.
        """
        timeout = self.workers_config.shutdown_timeout
        return ChildSpec(WORKER, self.start_worker, shutdown=timeout if timeout > 0 else "brutal_kill",
                         replace_exit=EXIT_REPLACED)

    def _worker_argv(self, *, incarnation: str) -> list[str]:
        workers = self.workers_config
        spec = WorkerSpec(
            endpoint=self.endpoint,
            owner=f"{self.node.name}/{{pid}}/{incarnation}",
            concurrency=workers.concurrency,
            prefetch=workers.prefetch,
            queues=list(workers.queues),
            tasks=list(self.node.tasks),
            sys_path=self.search_path,
            log_level=self.node.log_level,
            max_frame_bytes=self.dispatcher_config.max_frame_bytes,
            heartbeat_interval=workers.heartbeat_interval,
            cancel_grace=workers.cancel_grace,
            result_ttl=self.results_config.ttl,
        )
        return [sys.executable, "-c", WORKER_BOOT, spec.to_json()]

    async def start_worker(self) -> ProcessChild:
        """The worker pool's start function: one worker process."""
        child = await self._launch_worker()
        self._workers[child.pid] = child
        self.worker_starts += 1
        self.events.emit_one("worker_started", pid=child.pid)
        if self.worker_starts > self.workers_config.processes:
            self.events.emit_one("restart", pid=child.pid)
        return child

    def worker_exited(self, _child_id: str, child: Any, exit: Exit) -> None:
        """The worker pool's exit hook: the process's leased jobs go back to ready at once."""
        self._workers.pop(child.pid, None)
        self.worker_exits.append((child.pid, str(exit)))
        del self.worker_exits[:-EXITS_KEPT]
        self.events.emit_one("worker_exited", pid=child.pid, error=str(exit))
        owner = self.owner_of(child.pid, child.incarnation)
        if self._dispatcher is not None and not self._dispatcher.closed:
            self._dispatcher.worker_exited(owner, str(exit))
        else:  # between a dispatcher's death and its restart: the next one reclaims
            self._orphans.append((owner, f"worker died ({exit})"))

    @property
    def orphans(self) -> list[tuple[str, str]]:
        """``(owner, why)`` of workers that died while no dispatcher ran, until the next one reclaims them."""
        return list(self._orphans)

    def owner_of(self, pid: int, incarnation: str) -> str:
        """The lease owner id of a worker process (node, process, incarnation)."""
        return f"{self.node.name}/{pid}/{incarnation}"

    def worker_processes(self) -> list[ProcessChild]:
        """The running worker processes."""
        return list(self._workers.values())

    @property
    def worker_restarts(self) -> int:
        """Worker processes started beyond the first ``workers.processes``."""
        return max(0, self.worker_starts - self.workers_config.processes)

    # -- using it ------------------------------------------------------------------------------------
    def queue(self, name: str | None = None) -> QueueRef:
        """A ref to queue `name` (None: each job to its task's declared queue).

        Raises:
            RuntimeError: the runtime's writer has not started.
        """
        if self._writer is None:
            raise RuntimeError("node not started")
        # through the runtime (`enqueue`), so a ref outlives a restart of the journal writer
        return QueueRef(name, self, self._writer.loop, payload_budget(self.dispatcher_config.max_frame_bytes),
                        self.tasks.get, self.waiters)

    def submit(self, kind: int, arg: Any, callback: jw.Callback | None = None) -> None:
        """Hand one op to the current journal writer (`JournalWriter.submit`).

        Raises:
            JournalError: no writer runs (the node is not running).
        """
        writer = self._writer
        if writer is None:
            raise JournalError("the node is not running")
        writer.submit(kind, arg, callback)

    def enqueue(self, job: NewJob, callback: jw.Callback | None = None) -> None:
        """Hand one job insert to the current journal writer (what queue refs send to).

        Raises:
            JournalError: no writer runs (the node is not running).
        """
        writer = self._writer
        if writer is None:
            raise JournalError("the node is not running")
        if writer.enqueue(job, callback) and self._dispatcher is not None and (
                job.run_at is None or job.run_at <= time.time()):
            # submitted on the loop (a tell, a producer's job): the workers idle for its queue
            # lease in this turn, so in the same group, after the insert: one commit (one fsync)
            # between the producer and a worker; the only wake an enqueue gets before its commit
            self._dispatcher.wake_idle(job.queue)

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``, read through the writer (consistent with its commits)."""
        if self._writer is None:
            raise RuntimeError("node not started")
        counts: dict[str, dict[str, int]] = await self._writer.call(jw.CALL, operator.methodcaller("counts"))
        return counts

    async def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds, every node's work (`Journal.queue_stats`),
        read through the writer."""
        if self._writer is None:
            raise RuntimeError("node not started")
        stats: dict[str, QueueStats] = await self._writer.call(jw.CALL, operator.methodcaller("queue_stats", window))
        return stats

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job in the journal (True if it had not finished); the node holding it stops it."""
        if self._writer is None:
            raise RuntimeError("node not started")
        cancelled: bool = await self._writer.call(jw.CALL, operator.methodcaller("cancel", job_id))
        if cancelled:
            self.cancelled += 1
            self.events.emit_one("cancelled", job_id=job_id)
            self.cancel_noticed()  # this node may hold it: stop it now, not at the next poll
        return cancelled

    def cancel_noticed(self) -> None:
        """A job was cancelled (here, or in another process: the journal's cancel channel): the
        current dispatcher asks the journal at once which of its workers' jobs are cancelled."""
        if self._dispatcher is not None and not self._dispatcher.closed:
            self._dispatcher.check_cancels()

    async def pause_queue(self, queue: str) -> bool:
        """Pause `queue` in the journal (every node sharing it); True if it was running."""
        if self._writer is None:
            raise RuntimeError("node not started")
        paused: bool = await self._writer.call(jw.CALL, operator.methodcaller("pause_queue", queue))
        return paused

    async def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again and wake the dispatcher for it; True if it was paused."""
        if self._writer is None:
            raise RuntimeError("node not started")
        resumed: bool = await self._writer.call(jw.CALL, operator.methodcaller("resume_queue", queue))
        self.wake({queue})  # its ready jobs were skipped while it was paused
        return resumed

    async def paused_queues(self) -> list[str]:
        """The paused queues, read through the writer."""
        if self._writer is None:
            raise RuntimeError("node not started")
        paused: list[str] = await self._writer.call(jw.CALL, operator.methodcaller("paused_queues"))
        return paused

    async def breakers(self) -> list[BreakerState]:
        """Where the circuit breakers of this node's tasks stand, read through the writer;
        ``[]`` without a read when none of its tasks declares one."""
        if not any(p.circuit_breaker is not None for p in self.tasks.values()):
            return []
        if self._writer is None:
            raise RuntimeError("node not started")
        states: list[BreakerState] = await self._writer.call(jw.CALL, operator.methodcaller("breakers"))
        return [b for b in states if b.task in self.tasks]

    async def key_breakers(self) -> dict[str, int]:
        """How many per-key breakers are open and half-open, read through the writer; ``{}``
        without a read when none of this node's tasks declares a key breaker."""
        if not any(p.key_circuit_breaker is not None for p in self.tasks.values()):
            return {}
        if self._writer is None:
            raise RuntimeError("node not started")
        _, counts = await self._writer.call(jw.CALL, operator.methodcaller("key_breakers", 0))
        return dict(counts)

    async def wait_idle(self, timeout: float = 60.0, poll: float = 0.05) -> dict[str, dict[str, int]]:
        """Wait until no job is live (scheduled, ready, leased or in retry); return the counts.

        Raises:
            TimeoutError: still busy after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            counts = await self.counts()
            if not live_jobs(counts):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"node still busy after {timeout} s: {counts}")
            await asyncio.sleep(poll)

    def counters(self) -> Counter[str]:
        """Every counter of the node's writers and dispatchers over its life (a restart of a role
        never sets one back): the `Progress` counts, and ``enqueued``, ``retried``, ``dead``,
        ``gave_up`` (failed for good) of the writers. Cheap: reads counters only."""
        counts = self._carried.copy()
        for writer in self.writers:
            counts.update(_writer_counts(writer.stats))
        if self._dispatcher is not None:
            counts.update(_dispatcher_counts(self._dispatcher.stats))
        return counts

    def _carry_histograms(self, stats: jw.WriterStats) -> None:
        for i, n in enumerate(stats.commit_seconds):
            self._carried_commits[i] += n
        for i, n in enumerate(stats.group_sizes):
            self._carried_groups[i] += n
        self._carried_commit_sum += stats.commit_seconds_sum

    def commit_histograms(self) -> tuple[list[int], float, list[int]]:
        """The writers' committed groups over the node's life: counts per commit-time bucket
        (`journal_writer.COMMIT_BUCKETS`, then longer), their total seconds, and counts per
        group-size bucket (`journal_writer.GROUP_BUCKETS`, then larger); not cumulative."""
        times, groups, total = list(self._carried_commits), list(self._carried_groups), self._carried_commit_sum
        for writer in self.writers:
            stats = writer.stats
            times = [a + b for a, b in zip(times, stats.commit_seconds)]
            groups = [a + b for a, b in zip(groups, stats.group_sizes)]
            total += stats.commit_seconds_sum
        return times, total, groups

    def malformed_by_reason(self) -> dict[str, dict[str, int]]:
        """Frames dropped as malformed, ``{socket: {reason: count}}``: the dispatchers'
        (workers' socket) and the producer endpoint's, over the node's life."""
        producers = self._producer_drops.copy()
        if self._producers is not None:
            producers.update(self._producers.dropped.by_reason)
        workers = self._dispatcher_drops.copy()
        if self._dispatcher is not None:
            workers.update(self._dispatcher.stats.malformed)
        return {"dispatcher": dict(workers), "producers": dict(producers)}

    def progress(self) -> Progress:
        """Current counters (cheap; safe to call often)."""
        d, w = self._dispatcher, self._writer
        counts = self._carried.copy()
        for writer in self.writers:
            counts.update(_writer_counts(writer.stats))
        started = w.stats.group_started if w is not None else 0.0
        wait = time.monotonic() - started if started else 0.0
        if d is not None:
            counts.update(_dispatcher_counts(d.stats))
        producer_drops = self._producer_drops.copy()
        if self._producers is not None:
            counts.update(_producer_counts(self._producers))
            producer_drops.update(self._producers.dropped.by_reason)
        return Progress(
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            reclaimed=counts["reclaimed"],
            in_flight=d.in_flight if d else 0,
            workers=d.worker_count if d else 0,
            commits=counts["commits"],
            ops=counts["ops"],
            worker_restarts=self.worker_restarts,
            malformed=counts["malformed"],
            stale_acks=counts["stale_acks"],
            lost_workers=counts["lost_workers"],
            journal_error=((w.journal.outage if w.journal is not None else None) or w.stats.last_error) if w else None,
            journal_wait=wait,
            idle=d is not None and not d.in_flight and wait < JOURNAL_WAIT_REPORTED and d.waiting_for_jobs,
            producer_requests=counts["producer_requests"],
            producer_jobs=counts["producer_jobs"],
            producer_busy=counts["producer_busy"],
            producer_dropped=dict(producer_drops),
        )


def _refuse_if_taken(endpoint: str, key: str = "producers.endpoint") -> None:
    """Raise `EndpointUnusable` if a process other than this one listens at ipc `endpoint`."""
    try:
        pid = listener_pid(endpoint)
    except NodeNotRunning as exc:
        raise EndpointUnusable(f"{exc}; a node takes over no endpoint it cannot vouch for", key) from None
    if pid is not None and pid != os.getpid():
        raise EndpointUnusable(f"process {pid} already listens at {endpoint} (another node?); "
                               "each node needs an endpoint of its own", key)


def _sync_schedules(schedules: tuple[Schedule, ...], now: float, journal: Journal) -> list[str]:
    return sync_file_schedules(journal, schedules, now)


def _writer_counts(stats: jw.WriterStats) -> dict[str, int]:
    """The `Progress` counts one journal writer keeps."""
    return {"succeeded": stats.jobs_acked, "failed": stats.attempts_failed, "commits": stats.commits,
            "ops": stats.ops, "stale_acks": stats.stale_acks, "enqueued": stats.jobs_enqueued,
            "retried": stats.jobs_retried, "dead": stats.jobs_dead, "gave_up": stats.jobs_failed}


def _dispatcher_counts(stats: DispatcherStats) -> dict[str, int]:
    """The `Progress` counts one dispatcher keeps (a reclaim it had in flight when replaced is not counted)."""
    return {"reclaimed": stats.reclaimed, "malformed": sum(stats.malformed.values()),
            "lost_workers": stats.lost_workers}


def _producer_counts(server: ProducerServer) -> dict[str, int]:
    """The `Progress` counts one producer endpoint keeps (its drops by reason are kept apart)."""
    return {"producer_requests": server.accepted, "producer_jobs": server.jobs, "producer_busy": server.busy}


def live_jobs(counts: Mapping[str, Mapping[str, int]]) -> int:
    """How many jobs in `counts` (``{queue: {state: n}}``) are live: scheduled, ready, leased or in retry."""
    return sum(n for states in counts.values() for state, n in states.items() if state in LIVE_STATES)


# -- the role actors: each runs one role of the runtime under a supervisor ---------------------------
class JournalWriterRole(Actor):
    """Runs the runtime's journal writers (the main one and, on a shared journal, the duty
    writer); crashes if a writer thread ends unexpectedly."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.writer: jw.JournalWriter | None = None
        self._watches: list[asyncio.Task[None]] = []
        self._stopping = False

    async def on_start(self) -> None:
        self.writer = await self.runtime.start_writer()
        loop = asyncio.get_running_loop()
        self._watches = [loop.create_task(self._watch_thread(w)) for w in self.runtime.writers]

    async def _watch_thread(self, writer: jw.JournalWriter) -> None:
        await asyncio.shield(writer.finished)
        if not self._stopping:
            self.system.exit(self.ref, JournalError("the journal writer thread ended unexpectedly"))

    async def on_stop(self) -> None:
        self._stopping = True
        for watch in self._watches:
            watch.cancel()
        await self.runtime.stop_writers()


class DispatcherRole(Actor):
    """Runs the runtime's dispatcher; an unexpected error in it crashes this actor."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.dispatcher: Dispatcher | None = None

    def on_start(self) -> None:
        self.dispatcher = self.runtime.start_dispatcher(lambda exc: self.system.exit(self.ref, exc))

    def on_stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.drain()  # the last acks of workers that already stopped
            self.dispatcher.close()


class SchedulerRole(Actor):
    """Runs the runtime's scheduler (promotion of due jobs, journal maintenance) and cron."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.scheduler: Scheduler | None = None
        self.cron: Cron | None = None

    def on_start(self) -> None:
        self.scheduler = self.runtime.start_scheduler()
        self.cron = self.runtime.start_cron()

    def on_stop(self) -> None:
        if self.cron is not None:
            self.cron.stop()
        if self.scheduler is not None:
            self.scheduler.stop()


class ListenerRole(Actor):
    """Listens for jobs other producers commit, and wakes the dispatcher (journals that notify).

    A wake-up only: polling (the scheduler's tick) stays the correctness path. The
    listener's own thread reconnects with backoff when its connection is lost.
    """

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.listener: Any = None

    def on_start(self) -> None:
        self.listener = self.runtime.start_listener()

    async def on_stop(self) -> None:
        if self.listener is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.listener.stop)


class LeaderRole(Actor):
    """Holds this node's claim on the duties that run once among nodes (see `actorq.jobs.leader`)."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.leadership: Leadership | None = None

    def on_start(self) -> None:
        self.leadership = self.runtime.start_leadership()

    async def on_stop(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()


class ProducersRole(Actor):
    """Serves producers in other processes (`actorq.jobs.producers`): their jobs go through the writer."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.server: ProducerServer | None = None

    def on_start(self) -> None:
        self.server = self.runtime.start_producers()

    async def on_stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
