"""The dispatcher: leases ready jobs for workers with credit and collects their acks.

::

    worker process                    dispatcher (node loop)                journal writer
    ──────────────                    ──────────────────────                ──────────────
    HELLO {owner, credits} ─────────▶ register worker
                                      free credit & queue maybe ready ──▶ lease(queues, owner, n)
    ◀──────────────── JOBS [...] ──── send what the committed lease returned
    ACK [[id, lease, end]] ─────────▶ credit += n ──── complete / settle ▶ (journaled; then succeeded)
    HB (every heartbeat interval) ──▶ last seen = now
    (process dies) ── pool ─────────▶ worker_exited(owner) ── reclaim(owner) ─▶ ready again, attempt counted
    (silent > heartbeat_timeout) ───▶ lost ─────────────────── reclaim(owner) ─▶ ready again, attempt counted
    HB / ACK after being lost ──────▶ ◀── RESET: drop every job, say HELLO again (acks of old leases are fenced)
    HB / ACK from an unknown worker ▶ ◀── WHO (a restarted dispatcher): HELLO again with "held"
    HELLO {…, held: [[id, lease]]} ─▶ register; reclaim(owner, keep=held) ─▶ leases it no longer holds
                                                                           (e.g. acks lost with the old dispatcher)

Credits: a worker announces how many jobs it can hold (slots + prefetch);
the dispatcher never sends more than that, so nothing piles up unbounded.
Each worker has at most one lease op in flight. A lease that returns fewer
jobs than asked marks its queues empty until an enqueue commit or the
scheduler's tick wakes them; one that a rate's bucket or an open circuit
breaker cut short also sets a timer for when the journal says more may go
(its ``rate_wait``: the next token, the end of the cool-down).

Leases are renewed only for workers heard from within the heartbeat timeout,
so a paused (SIGSTOP) or wedged worker loses its jobs to others; when it comes
back, its late acks carry old lease ids and the journal rejects them (fencing),
counted in the writer's ``stale_acks``.

Each job goes out with the deadline up to which its lease is surely held
(``valid_until``: `LEASE_TRUST` of the lease's length after the LEASE op was
submitted), and each committed renewal sends its workers LEASES with the new
one, so a worker never starts a prefetched job whose lease may have lapsed
while the node was paused (`actorq.jobs.wire`). When the liveness check runs a
whole period late, the dispatcher itself did not run (the node was paused, with
its workers, or its loop blocked): that window is not counted as the workers'
silence.

The messages are `actorq.jobs.wire`'s; what an attempt's end means for its
job (retry, dead, failed, back to ready) is decided when the journal writer
settles it (`actorq.jobs.outcome`), never here.

Malformed frames are dropped and counted in `malformed` (by reason); a log
line is written at most once per second.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections import Counter
from itertools import chain
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

import zmq

from actorq.jobs import journal_writer as jw
from actorq.jobs import wire
from actorq.jobs.events import EventHub, NodeEvent
from actorq.jobs.outcome import AttemptEnd
from actorq.journal.protocol import LeasedJob
from actorq.transports.codec import FrameError
from actorq.transports.drops import DropCounter
from actorq.transports.zmq import LoopSocket

logger = logging.getLogger(__name__)

LEASE_TRUST = 0.8
"""The share of a lease's length, from when it was asked for, within which its worker may start
the job. The rest is margin: for the journal's clock running faster than ours, and for the
renewal of a job started near its deadline to commit."""


MIN_TOKEN_WAIT = 0.002
"""Seconds at least between a lease a rate left short and the wake for its next token."""


def _answered(worker: "_Worker", job_id: str, lease_id: int) -> bool:
    """Forget the attempt (`job_id`, `lease_id`) `worker` answered; True if it held it (its
    credit comes back). Matched by lease too: a job can be there twice, an attempt that ran on
    after a RESET and the same job sent again, and each answer frees its own slot once."""
    if worker.held.get(job_id) == lease_id:
        del worker.held[job_id]
        return True
    if (job_id, lease_id) in worker.superseded:
        worker.superseded.discard((job_id, lease_id))
        return True
    return False


@dataclass(eq=False)
class _Worker:
    owner: str
    ident: bytes
    queues: tuple[str, ...]
    credits: int
    pid: int
    leasing: bool = False
    woken: bool = False  # a wake came while its lease was in flight: that lease's answer may be stale
    held: dict[str, int] = field(default_factory=dict)
    # (id, lease id) of attempts it still runs of jobs sent to it again under a new lease (a
    # sync attempt that ran on after a RESET): each one's answer frees a credit of its own
    superseded: set[tuple[str, int]] = field(default_factory=set)
    last_seen: float = 0.0
    cancel_sent: set[str] = field(default_factory=set)  # held jobs it was told are cancelled
    token_timer: asyncio.TimerHandle | None = None  # its queues woken when a rate's next token is due


class DispatcherStats:
    """One dispatcher's counters, for `status` and tests.

    ``succeeded``, ``failed`` and ``released`` count ack items as workers sent them,
    before the journal fences stale leases: what the journal stored is the writer's
    (`actorq.jobs.journal_writer.WriterStats`), and what the progress line shows.
    """

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.released = 0
        self.cancels_sent = 0  # running or queued jobs its workers were told to stop (cancelled)
        self.reclaimed = 0
        self.sent = 0
        self.unroutable = 0
        self.malformed: Counter[str] = Counter()
        self.reclaim_events = 0
        self.lost_workers = 0
        self.rejoined = 0
        self.own_pauses = 0
        """Times the dispatcher found it had not run for a while (its node paused, its loop blocked)."""


class Dispatcher:
    """Hands leased jobs to worker processes over a ZeroMQ ROUTER socket.

    Args:
        writer: the journal writer that performs every transition.
        loop: the node's loop.
        endpoint: where to bind (``ipc://...`` or ``tcp://127.0.0.1:port``).
        lease_timeout: seconds a lease lasts without renewal.
        heartbeat_timeout: a worker silent this long is lost: its leases are reclaimed.
        max_frame_bytes: the largest JOBS frame; a worker's frames are refused by ZeroMQ (the peer
            is disconnected) past what one can send (`wire.worker_frame_bytes`).
        worker_capacity: jobs a worker holds at most (slots + prefetch): bounds what the socket holds.
        context: the zmq context.
    """

    def __init__(
        self,
        writer: jw.JournalWriter,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        *,
        lease_timeout: float,
        heartbeat_timeout: float,
        max_frame_bytes: int,
        worker_capacity: int,
        context: zmq.Context | None = None,  # type: ignore[type-arg]
    ) -> None:
        self.writer = writer
        self.loop = loop
        self.endpoint = endpoint
        self.lease_timeout = lease_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.max_frame_bytes = max_frame_bytes
        self.inbound_frame_bytes = wire.worker_frame_bytes(worker_capacity, max_frame_bytes)
        self._pipe_messages = wire.pipe_messages(worker_capacity)
        self._ctx = context or zmq.Context.instance()
        self._socket: LoopSocket | None = None
        self._workers: dict[str, _Worker] = {}
        self._by_ident: dict[bytes, _Worker] = {}
        self._dead_owners: dict[str, None] = {}  # insertion-ordered set, bounded below
        self._lost_owners: dict[str, None] = {}  # silent past the heartbeat timeout; leases taken away
        self._asked: dict[bytes, float] = {}  # unknown senders told WHO/RESET, and when (rate limit)
        self._empty: set[str] = set()
        self._accepting = False
        self._workers_told_to_stop = False
        self._renew_handle: asyncio.TimerHandle | None = None
        self._liveness_handle: asyncio.TimerHandle | None = None
        self._liveness_due = 0.0  # when the pending liveness check should run (time.monotonic)
        self._successor = False  # an earlier dispatcher ran before this one (see `take_over`)
        self.closed = False
        self._cancel_poll_in_flight = False
        self._cancel_poll_again = False  # a cancel was pushed while a poll was under way
        self.cancel_polling = True
        self.limited_queues: frozenset[str] = frozenset()
        """Queues with a concurrency limit: woken when their jobs' completions are journaled."""
        """Poll held jobs for cancels each liveness period, the fallback of `check_cancels`
        (tests turn it off to show that a cancel is pushed)."""
        self.stats = DispatcherStats()
        self._malformed = DropCounter(
            "dispatcher", logger, event="dropped a malformed frame", counts=self.stats.malformed).drop
        self.on_reclaimed: Callable[[str, int], None] | None = None
        # reclaims that failed to commit and could not be retried before close: the next
        # dispatcher takes them over (see `take_over`)
        self.pending_reclaims: list[tuple[str, str]] = []
        # called with an unexpected exception from message handling; the node's dispatcher
        # actor crashes with it, and its supervisor restarts the dispatcher
        self.on_error: Callable[[BaseException], None] | None = None
        self.events: EventHub | None = None
        """Where ``started`` node events go (a job sent to its worker)."""

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket and start serving. Idempotent."""
        if self._socket is not None:
            return
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable send raises instead of vanishing
        # per worker pipe: what one peer can make this socket hold (see `wire.pipe_messages`)
        sock.setsockopt(zmq.MAXMSGSIZE, self.inbound_frame_bytes)
        sock.setsockopt(zmq.SNDHWM, self._pipe_messages)
        sock.setsockopt(zmq.RCVHWM, self._pipe_messages)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._socket = LoopSocket(self.loop, sock, self._guarded)
        self._socket.start()
        self._accepting = True
        self._schedule_renew()
        self._schedule_liveness()
        logger.info("dispatcher listening on %s", self.endpoint)

    def stop_leasing(self) -> None:
        """Take no new leases (graceful shutdown); acks are still collected."""
        self._accepting = False

    def request_workers_stop(self) -> None:
        """Ask every connected worker to finish its running jobs and exit.

        A worker that says hello afterwards (it was still starting) is told at once.
        """
        self._workers_told_to_stop = True
        for worker in list(self._workers.values()):
            self._send(worker, wire.Stop.FRAME)

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self._accepting = False
        self.closed = True
        for handle in (self._renew_handle, self._liveness_handle, *(w.token_timer for w in self._workers.values())):
            if handle is not None:
                handle.cancel()
        if self._socket is not None:
            self._socket.close()

    @property
    def in_flight(self) -> int:
        """Jobs currently held by workers."""
        return sum(len(w.held) for w in self._workers.values())

    @property
    def waiting_for_jobs(self) -> bool:
        """True when workers are registered and the last lease for each one's queues found
        no ready job (none in flight since): the node has nothing to run."""
        return bool(self._workers) and all(
            not w.leasing and self._empty.issuperset(w.queues) for w in self._workers.values())

    @property
    def worker_count(self) -> int:
        """Workers that have said hello and not died."""
        return len(self._workers)

    # -- worker lifecycle from the pool supervisor ------------------------------------
    def drain(self) -> None:
        """Handle every message already queued on the socket (e.g. a dead worker's last acks)."""
        if self._socket is not None:
            self._socket.drain()

    def worker_exited(self, owner: str, reason: str) -> None:
        """A worker process died: return its leased jobs to ready at once (attempt counted).

        Acks the worker sent before it died are handled first, so they are not fenced.
        """
        self.drain()
        _remember(self._dead_owners, owner)
        self._lost_owners.pop(owner, None)
        worker = self._workers.pop(owner, None)
        if worker is not None:
            self._by_ident.pop(worker.ident, None)
        self._reclaim(owner, f"worker died ({reason})", ())

    def _reclaim(self, owner: str, why: str, keep: Collection[int]) -> None:
        """Return `owner`'s leased jobs, except the lease ids in `keep`, to ready (attempt counted)."""

        def done(count: Any, error: BaseException | None) -> None:
            if error is not None:
                logger.error("reclaim for %s failed (%s); retrying", owner, error)
                self._retry_reclaim(owner, why)
                return
            self.stats.reclaimed += count
            self.stats.reclaim_events += 1
            if count:
                logger.warning("%s: %s: %d leased jobs returned to ready", owner, why, count)
                self.wake(None)
            if self.on_reclaimed is not None:
                self.on_reclaimed(owner, count)

        self.writer.submit(jw.RECLAIM, jw.Reclaim(AttemptEnd.CRASHED, why, owner=owner, keep=tuple(keep)), done)

    def _retry_reclaim(self, owner: str, why: str) -> None:
        """A reclaim did not commit: try again in a second, or leave it to the next dispatcher.

        Without this, the jobs would stay leased to a live owner whose leases are renewed,
        or to a dead one until lease expiry.
        """
        def retry() -> None:
            if self.closed:
                self.pending_reclaims.append((owner, why))
                return
            worker = self._workers.get(owner)  # re-registered meanwhile: keep what it holds now
            self._reclaim(owner, why, list(worker.held.values()) if worker is not None else ())

        if self.closed:
            self.pending_reclaims.append((owner, why))
        else:
            self.loop.call_later(1.0, retry)

    def take_over(self, previous: "Dispatcher | None", orphans: Collection[tuple[str, str]] = ()) -> None:
        """Reclaim what an earlier dispatcher could not, and for workers that died while none ran."""
        pending = [*(previous.pending_reclaims if previous is not None else ()), *orphans]
        if previous is not None:
            self._successor = True
            previous.pending_reclaims = []
        for owner, why in pending:
            if why.startswith("worker died"):  # a late hello from it must not register it
                _remember(self._dead_owners, owner)
            self._reclaim(owner, why, ())

    def wake(self, queues: set[str] | None, leased: Collection[str] = ()) -> None:
        """Ready jobs may exist in `queues` (None: every queue): lease for idle workers.

        Args:
            leased: owners whose leases already saw these jobs (a lease in the group that
                committed them, after their inserts): they are not asked again.
        """
        if queues is None:
            self._empty.clear()
        else:
            self._empty.difference_update(queues)
        for worker in list(self._workers.values()):
            if worker.leasing:
                worker.woken = True
            elif worker.owner not in leased:
                self._pump(worker)

    def wake_idle(self, queue: str) -> None:
        """A job of `queue` was just submitted on the loop: wake the workers idle for want of one.

        A set lookup unless the queue's last lease found it empty, so a burst of tells costs
        one wake; the lease that follows lands in the insert's group (`JournalWriter.submit`).
        """
        if queue in self._empty:
            self.wake({queue})

    # -- socket ------------------------------------------------------------------------
    def _guarded(self, frames: list[bytes]) -> None:
        try:
            self._on_message(frames)
        except Exception as exc:  # a bug, not bad input (that is counted above): let it crash
            if self.on_error is None:
                raise
            self.on_error(exc)

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._malformed("part_count", f"{len(frames)} parts")
            return
        ident, payload = frames
        try:
            message = wire.from_worker(payload, ident, self.inbound_frame_bytes)
        except FrameError as exc:
            self._malformed(exc.reason, exc.detail)
            return
        worker = self._by_ident.get(ident)
        if worker is not None:  # any valid frame says it is alive
            worker.last_seen = time.monotonic()
        if isinstance(message, wire.Hello):
            self._on_hello(ident, message)
            return
        if isinstance(message, wire.Bye):
            self._on_bye(ident)
            return
        if isinstance(message, wire.Ack):
            self._on_ack(worker, message)
        if worker is None:
            self._unknown_sender(ident)

    def _unknown_sender(self, ident: bytes) -> None:
        """A heartbeat or ack from a worker that is not registered here.

        A lost worker is told RESET (its leases were taken away); any other live one
        is told WHO (this dispatcher restarted and does not know it). At most once a
        second per sender, so a burst of acks costs one reply.
        """
        owner = ident.decode("utf-8", "replace")
        if owner in self._dead_owners:
            return
        now = time.monotonic()
        if now - self._asked.get(ident, -10.0) < 1.0:
            return
        self._asked[ident] = now
        if len(self._asked) > 10_000:
            del self._asked[next(iter(self._asked))]
        frame = wire.Reset.FRAME if owner in self._lost_owners else wire.Who.FRAME
        self._send_to(ident, owner, frame)

    def _on_hello(self, ident: bytes, hello: wire.Hello) -> None:
        owner, credits, pid = hello.owner, hello.credits, hello.pid
        rejoin = hello.held is not None
        leases = hello.held or {}
        if owner in self._dead_owners:
            logger.info("ignoring hello from dead worker %s", owner)
            return
        if owner in self._lost_owners:
            if leases and not hello.reset:  # it has not dropped its lost jobs yet
                self._send_to(ident, owner, wire.Reset.FRAME)
                return
            # back after a RESET; what it still "holds" are sync jobs that cannot be stopped:
            # their leases are gone, so their acks will be fenced, but they free its credits
            del self._lost_owners[owner]
            logger.info("lost worker %s is back (%d unstoppable jobs still running)", owner, len(leases))
        worker = self._workers.get(owner)
        if worker is None:
            worker = _Worker(owner, ident, hello.queues, credits, pid, last_seen=time.monotonic())
            worker.held.update(leases)
            self._workers[owner] = worker
            self._by_ident[ident] = worker
            self._asked.pop(ident, None)
            if rejoin:
                self.stats.rejoined += 1
                logger.info("worker %s (pid %d) re-announced %d held jobs and %d credits",
                            owner, pid, len(leases), credits)
                # leases it does not hold any more (acks lost with a dead dispatcher, jobs sent
                # that never arrived) go back to ready; the ones it holds stay its own
                self._reclaim(owner, self._rejoin_reason(hello), list(leases.values()))
            else:
                logger.info("worker %s (pid %d) ready with %d credits", owner, pid, credits)
        if self._workers_told_to_stop:  # it missed the broadcast: without this it runs until killed
            self._send(worker, wire.Stop.FRAME)
            return
        self._pump(worker)

    def _rejoin_reason(self, hello: wire.Hello) -> str:
        """Why a re-announcing worker no longer holds some of its leases: what made it re-announce."""
        if hello.reset:
            return ("lease not held by its worker when it came back after a RESET "
                    "(it was silent past the heartbeat timeout)")
        if self._successor:
            return "lease not held by its worker when it re-announced after a dispatcher restart"
        return "lease not held by its worker when it re-announced to a dispatcher that did not know it"

    def _on_bye(self, ident: bytes) -> None:
        worker = self._by_ident.pop(ident, None)
        if worker is not None:
            self._workers.pop(worker.owner, None)
            if worker.held:  # a worker that says bye holds nothing; if it does, give them back
                self.writer.submit(jw.RELEASE, list(worker.held.items()))

    def _on_ack(self, worker: _Worker | None, ack: wire.Ack) -> None:
        for reason in ack.rejected:
            self._malformed(reason)
        completes, releases = ack.succeeded, ack.released
        endings = [jw.Ending(item.job_id, item.lease_id, AttemptEnd(item.end), item.error or "error", item.traceback,
                             item.delay)
                   for item in ack.ended]
        if worker is not None:  # each answered attempt it held frees a credit
            worker.credits += sum(_answered(worker, answer[0], answer[1])
                                  for answer in chain(completes, releases, endings))
        stats = self.stats
        settled = self._ack_settled(worker, wake=True)
        if completes:
            stats.succeeded += len(completes)
            if ack.results:  # the values travel with their completions, into the same statement
                completes = jw.Completions(completes, results=ack.results)
            # a limited queue leases again once its finished jobs are journaled: its last lease
            # may have stopped at the limit and marked it empty (`limited_queues`)
            self.writer.submit(jw.COMPLETE, completes,
                               self._limited_settled(worker) if self.limited_queues else
                               self._ack_settled(worker, wake=False))
        if endings:
            stats.failed += len(endings)
            self.writer.submit(jw.FAIL, endings, settled)
        if releases:
            stats.released += len(releases)
            self.writer.submit(jw.RELEASE, releases, settled)
        if worker is not None:
            self._pump(worker)

    def _ack_settled(self, worker: _Worker | None, wake: bool) -> Callable[[Any, BaseException | None], None]:
        def settled(_result: Any, error: BaseException | None) -> None:
            if error is None:
                if wake:
                    self.wake(None)  # released jobs are ready again; failed ones may be due soon
                return
            # The acks were not journaled, and the worker has forgotten those jobs: without
            # this they would stay leased to a live worker, renewed forever. Reclaim every
            # lease of the worker except those it still holds (attempt counted; at-least-once).
            if worker is not None and self._workers.get(worker.owner) is worker:
                logger.error("acks from %s not journaled (%s): reclaiming its leases it no longer holds",
                             worker.owner, error)
                why = wire.clean_text(f"ack not journaled: {error}")
                self._reclaim(worker.owner, why, list(worker.held.values()))
        return settled

    def _limited_settled(self, worker: _Worker | None) -> Callable[[Any, BaseException | None], None]:
        settled = self._ack_settled(worker, wake=False)

        def then_wake(result: Any, error: BaseException | None) -> None:
            settled(result, error)
            if error is None:
                self.wake(set(self.limited_queues))
        return then_wake

    def _after_retry(self, _result: Any, _error: BaseException | None) -> None:
        self.wake(None)  # released jobs are ready again; failed ones may be due soon

    # -- leasing ---------------------------------------------------------------------------
    def _pump(self, worker: _Worker) -> None:
        if not self._accepting or worker.leasing:
            return
        free = worker.credits
        if free <= 0 or all(q in self._empty for q in worker.queues):
            return
        worker.leasing = True
        # read before the journal sets the expiry (its now() + lease_for): the deadline is earlier
        valid_until = wire.lease_clock() + self.lease_timeout * LEASE_TRUST
        asked = [free]
        rate_waits: list[float] = []

        def limit() -> int:
            # Called on the writer thread when the lease runs: the credits free then. Acks that
            # came meanwhile freed more (no-op jobs finish while their lease waits for its group);
            # nothing takes credits while this worker's one lease is in flight, so the number read
            # there can only be low, never too high. Asking for the credits free at submission only
            # leased half of a worker's credits a group with the default settings.
            asked[0] = max(free, min(worker.credits, wire.MAX_CREDITS))
            return asked[0]

        self.writer.submit(
            jw.LEASE,
            jw.Lease(worker.queues, worker.owner, limit, self.lease_timeout, rate_waits),
            lambda jobs, error: self._on_leased(worker, asked[0], jobs, error, valid_until, rate_waits),
        )

    def _on_leased(self, worker: _Worker, asked: int, jobs: list[LeasedJob] | None, error: BaseException | None,
                   valid_until: float, rate_waits: Collection[float] = ()) -> None:
        worker.leasing = False
        if rate_waits and error is None:
            self._wake_at_next_token(worker, min(rate_waits))
        woken, worker.woken = worker.woken, False
        if error is not None or jobs is None:
            logger.error("lease for %s failed: %s", worker.owner, error)
            self.loop.call_later(1.0, self._pump, worker)
            return
        if self.closed or self._workers.get(worker.owner) is not worker:  # died meanwhile: give the jobs back
            if jobs:
                self.writer.submit(jw.RELEASE, [(j.id, j.lease_id) for j in jobs])
            return
        if woken:  # jobs may have come after this lease looked: look again
            self.loop.call_soon(self._pump, worker)
        elif len(jobs) < asked:
            self._empty.update(worker.queues)
        if not jobs:
            return
        budget, name = wire.payload_budget(self.max_frame_bytes), wire.MAX_NAME_CHARS
        # jobs no worker would accept: a payload from a producer with a larger limit, a name past
        # the wire's bound; sent, they would stay leased to a worker that dropped them
        unsendable = [j for j in jobs if len(j.payload) > budget or len(j.id) > name or len(j.task) > name
                      or len(j.queue) > name]
        if unsendable:
            self.writer.submit(jw.FAIL, [jw.Ending(j.id, j.lease_id, AttemptEnd.UNRUNNABLE, self._unsendable(j))
                                         for j in unsendable])
            jobs = [j for j in jobs if j not in unsendable]
        # one JOBS message per frame's worth of payloads: a frame over the peer's MAXMSGSIZE
        # would make ZeroMQ drop the connection, and the jobs in it would never arrive
        batch: list[LeasedJob] = []
        size = 0
        for j in jobs:
            if batch and size + len(j.payload) > budget:
                self._send_jobs(worker, batch, valid_until)
                batch, size = [], 0
            batch.append(j)
            size += len(j.payload)
        if batch:
            self._send_jobs(worker, batch, valid_until)
        if len(jobs) + len(unsendable) == asked:
            self._pump(worker)

    def _wake_at_next_token(self, worker: _Worker, wait: float) -> None:
        """A rate's bucket left this worker's lease short: wake its queues when the next token
        is due (the lease marked them empty; no enqueue or completion would wake them)."""
        if worker.token_timer is not None:
            worker.token_timer.cancel()

        def due() -> None:
            worker.token_timer = None
            if not self.closed and self._workers.get(worker.owner) is worker:
                self.wake(set(worker.queues))
        # at least 2 ms: a rate of thousands a second is leased in whole handfuls, not a token a wake
        worker.token_timer = self.loop.call_later(max(wait, MIN_TOKEN_WAIT), due)

    def _unsendable(self, job: LeasedJob) -> str:
        if len(job.payload) > wire.payload_budget(self.max_frame_bytes):
            return (f"payload of {len(job.payload):,} bytes does not fit in dispatcher.max_frame_bytes "
                    f"({self.max_frame_bytes:,})")
        return f"job id, task or queue name longer than {wire.MAX_NAME_CHARS} characters"

    def _send_jobs(self, worker: _Worker, jobs: list[LeasedJob], valid_until: float) -> None:
        if not self._send(worker, wire.Jobs.encode_leased(jobs, valid_until)):
            self.writer.submit(jw.RELEASE, [(j.id, j.lease_id) for j in jobs], self._after_retry)
            return
        worker.credits -= len(jobs)
        held = worker.held
        for j in jobs:
            previous = held.get(j.id)
            if previous is not None and previous != j.lease_id:  # its old attempt runs on there
                worker.superseded.add((j.id, previous))
            held[j.id] = j.lease_id
        self.stats.sent += len(jobs)
        events = self.events
        if events is not None and events.active:
            events.emit([NodeEvent("started", j.id, j.task, j.queue, j.attempt) for j in jobs])

    def _send(self, worker: _Worker, payload: bytes) -> bool:
        if self._socket is None:
            return False
        try:
            self._socket.send([worker.ident, payload])
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (peer gone) or EAGAIN (HWM): not delivered
            self.stats.unroutable += 1
            logger.warning("could not send to worker %s: %s", worker.owner, exc)
            return False

    def _send_to(self, ident: bytes, owner: str, payload: bytes) -> None:
        if self._socket is None:
            return
        try:
            self._socket.send([ident, payload])
        except zmq.ZMQError as exc:
            self.stats.unroutable += 1
            logger.debug("could not send to %s: %s", owner, exc)

    # -- liveness ---------------------------------------------------------------------
    def _liveness_period(self) -> float:
        return min(1.0, self.heartbeat_timeout / 4)

    def _schedule_liveness(self) -> None:
        period = self._liveness_period()
        self._liveness_due = time.monotonic() + period
        self._liveness_handle = self.loop.call_later(period, self._check_liveness)

    def _check_liveness(self) -> None:
        now = time.monotonic()
        self._forgive_own_pause(now)
        deadline = now - self.heartbeat_timeout
        for worker in [w for w in self._workers.values() if w.last_seen < deadline]:
            self._lose(worker)
        if self.cancel_polling:
            self._poll_cancels()
        self._schedule_liveness()

    # -- cancellation ---------------------------------------------------------------------
    def check_cancels(self) -> None:
        """A job was just cancelled (this node's cancel, or another process's, heard from the
        journal's cancel channel): ask the journal now which held jobs are cancelled, and stop
        them. A read already under way, which may predate the cancel, is followed by another."""
        if self._cancel_poll_in_flight:
            self._cancel_poll_again = True
            return
        self._poll_cancels()

    def _poll_cancels(self) -> None:
        """Ask the journal which held jobs were cancelled (by any client, on any node) and
        tell their workers to stop them. One read per liveness period (at most 1 s), and
        only while workers hold jobs; the leases are void already, so this only stops the work.
        The fallback of `check_cancels`, which a cancel pushes."""
        if self._cancel_poll_in_flight:
            return
        holders = {job_id: worker for worker in self._workers.values() for job_id in worker.held}
        if not holders:
            return
        self._cancel_poll_in_flight = True
        self._cancel_poll_again = False

        def found(ids: Any, error: BaseException | None) -> None:
            self._cancel_poll_in_flight = False
            if self._cancel_poll_again and not self.closed:
                self._cancel_poll_again = False
                self.loop.call_soon(self._poll_cancels)
            if error is not None or self.closed:
                return
            told: dict[str, list[str]] = {}
            for job_id in ids:
                worker = holders[job_id]
                if (self._workers.get(worker.owner) is worker and job_id in worker.held
                        and job_id not in worker.cancel_sent):
                    worker.cancel_sent.add(job_id)
                    told.setdefault(worker.owner, []).append(job_id)
            for owner, job_ids in told.items():
                worker = self._workers[owner]
                worker.cancel_sent &= worker.held.keys()  # forget the answered ones
                self.stats.cancels_sent += len(job_ids)
                self._send(worker, wire.Cancel(tuple(job_ids)).encode())

        self.writer.submit(jw.CALL, operator.methodcaller("cancelled", list(holders)), found)

    def _forgive_own_pause(self, now: float) -> None:
        """This check ran a whole period or more late: the dispatcher itself did not run.

        Its node was paused (SIGSTOP of the process group stops the workers with it) or its
        loop was blocked: what a worker sent meanwhile was not read, so silence in that
        window says nothing about it. Each worker's silence is counted without the window
        (its last sight moves on by as much): a paused node does not lose every worker on
        resuming, and a worker silent before the pause is still lost as it would have been.
        """
        late = now - self._liveness_due
        if late <= self._liveness_period():
            return
        for worker in self._workers.values():
            worker.last_seen = min(now, worker.last_seen + late)
        self.stats.own_pauses += 1
        logger.warning("the dispatcher did not run for %.1f s (its node was paused or its loop blocked): "
                       "worker silence in that time is not counted", late)

    def _lose(self, worker: _Worker) -> None:
        """`worker` has been silent past the heartbeat timeout: take its leases away."""
        self._workers.pop(worker.owner, None)
        self._by_ident.pop(worker.ident, None)
        _remember(self._lost_owners, worker.owner)
        self.stats.lost_workers += 1
        silent = time.monotonic() - worker.last_seen
        logger.warning("worker %s (pid %d) silent for %.1f s: its %d jobs go to other workers",
                       worker.owner, worker.pid, silent, len(worker.held))
        self._reclaim(worker.owner, f"worker unresponsive (no heartbeat for {silent:.0f} s)", ())

    # -- lease renewal ------------------------------------------------------------------
    def _leases_renewed(self, owners: list[str]) -> Callable[[Any, BaseException | None], None]:
        """The callback of a RENEW op for `owners`, submitted now: tell each worker its new deadline.

        The journal extends every lease the owner still holds to its now() + lease_timeout
        when the op commits, which is after this reading: so this reading plus `LEASE_TRUST`
        of lease_timeout is before that expiry. A worker applies it only to jobs still within
        their old deadline (see `actorq.jobs.wire`).
        """
        until = wire.lease_clock() + self.lease_timeout * LEASE_TRUST
        workers = [self._workers[owner] for owner in owners]

        def renewed(_count: Any, error: BaseException | None) -> None:
            if error is not None or self.closed:  # not extended: the workers keep their deadlines
                return
            frame = wire.Leases(until).encode()
            for worker in workers:
                if self._workers.get(worker.owner) is worker:  # still the one renewed (not lost meanwhile)
                    self._send(worker, frame)
        return renewed

    def _schedule_renew(self) -> None:
        self._renew_handle = self.loop.call_later(self.lease_timeout / 3, self._renew)

    def _renew(self) -> None:
        owners = [w.owner for w in self._workers.values() if w.held]
        if owners:
            self.writer.submit(jw.RENEW, jw.Renew(owners, self.lease_timeout), self._leases_renewed(owners))
        self._schedule_renew()


def _remember(bounded: dict[str, None], owner: str) -> None:
    """Add `owner` to an insertion-ordered set that keeps the newest 10,000 entries."""
    bounded[owner] = None
    if len(bounded) > 10_000:  # late messages arrive within seconds of a death
        del bounded[next(iter(bounded))]

