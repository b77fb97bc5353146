"""The dispatcher: leases ready jobs for workers with credit and collects their acks.

::

    worker process                    dispatcher (node loop)                journal writer
    ──────────────                    ──────────────────────                ──────────────
    HELLO {owner, credits} ─────────▶ register worker
                                      free credit & queue maybe ready ──▶ lease(queues, owner, n)
    ◀──────────────── JOBS [...] ──── send what the committed lease returned
    ACK [[id, lease, outcome]] ─────▶ credit += n ──── complete / fail ─▶ (journaled; then succeeded)
    (process dies) ── pool ─────────▶ worker_exited(owner) ── reclaim(owner) ─▶ ready again, attempt counted

Credits: a worker announces how many jobs it can hold (slots + prefetch);
the dispatcher never sends more than that, so nothing piles up unbounded.
Each worker has at most one lease op in flight. A lease that returns fewer
jobs than asked marks its queues empty until an enqueue commit or the
scheduler's tick wakes them.

Malformed frames are dropped and counted in `malformed` (by reason); a log
line is written at most once per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from actorq.jobs import journal_writer as jw
from actorq.journal.protocol import Failure, LeasedJob
from actorq.transports import constants as wire
from actorq.transports.codec import FrameError, decode, encode
from actorq.transports.zmq import LoopSocket

logger = logging.getLogger(__name__)

MAX_LEASE_ID = 2**63 - 1  # lease ids are positive SQLite INTEGERs (the journal draws 62 random bits)

OUTCOME_OK, OUTCOME_ERROR, OUTCOME_DISCARD, OUTCOME_UNKNOWN, OUTCOME_RELEASE = (
    "ok", "error", "discard", "unknown", "release",
)


@dataclass(eq=False)
class _Worker:
    owner: str
    ident: bytes
    queues: tuple[str, ...]
    credits: int
    pid: int
    leasing: bool = False
    held: dict[str, int] = field(default_factory=dict)


class DispatcherStats:
    """Counters for progress output, `status` and tests."""

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.released = 0
        self.reclaimed = 0
        self.sent = 0
        self.unroutable = 0
        self.malformed: Counter[str] = Counter()
        self.reclaim_events = 0


class Dispatcher:
    """Hands leased jobs to worker processes over a ZeroMQ ROUTER socket.

    Args:
        writer: the journal writer that performs every transition.
        loop: the node's loop.
        endpoint: where to bind (``ipc://...`` or ``tcp://127.0.0.1:port``).
        lease_timeout: seconds a lease lasts without renewal.
        max_frame_bytes: larger messages are refused by ZeroMQ (the peer is disconnected).
        context: the zmq context.
    """

    def __init__(
        self,
        writer: jw.JournalWriter,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        *,
        lease_timeout: float = 300.0,
        max_frame_bytes: int = 16 << 20,
        context: zmq.Context | None = None,  # type: ignore[type-arg]
    ) -> None:
        self.writer = writer
        self.loop = loop
        self.endpoint = endpoint
        self.lease_timeout = lease_timeout
        self.max_frame_bytes = max_frame_bytes
        self._ctx = context or zmq.Context.instance()
        self._socket: LoopSocket | None = None
        self._workers: dict[str, _Worker] = {}
        self._by_ident: dict[bytes, _Worker] = {}
        self._dead_owners: dict[str, None] = {}  # insertion-ordered set, bounded below
        self._empty: set[str] = set()
        self._accepting = False
        self._workers_told_to_stop = False
        self._last_malformed_log = 0.0
        self._renew_handle: asyncio.TimerHandle | None = None
        self.stats = DispatcherStats()
        self.on_reclaimed: Callable[[str, int], None] | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Bind the socket and start serving. Idempotent."""
        if self._socket is not None:
            return
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable send raises instead of vanishing
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._socket = LoopSocket(self.loop, sock, self._on_message)
        self._socket.start()
        self._accepting = True
        self._schedule_renew()
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
            self._send(worker, encode(wire.STOP, None))

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self._accepting = False
        if self._renew_handle is not None:
            self._renew_handle.cancel()
        if self._socket is not None:
            self._socket.close()

    @property
    def in_flight(self) -> int:
        """Jobs currently held by workers."""
        return sum(len(w.held) for w in self._workers.values())

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
        self._dead_owners[owner] = None
        if len(self._dead_owners) > 10_000:  # a late hello arrives within seconds of a death
            del self._dead_owners[next(iter(self._dead_owners))]
        worker = self._workers.pop(owner, None)
        if worker is not None:
            self._by_ident.pop(worker.ident, None)
        why = f"worker died ({reason})"

        def done(count: Any, error: BaseException | None) -> None:
            if error is not None:
                logger.error("reclaim for %s failed: %s", owner, error)
                return
            self.stats.reclaimed += count
            self.stats.reclaim_events += 1
            if count:
                logger.warning("worker %s died (%s): %d leased jobs returned to ready", owner, reason, count)
                self.wake(None)
            if self.on_reclaimed is not None:
                self.on_reclaimed(owner, count)

        self.writer.submit(jw.RECLAIM, (owner, why), done)

    def wake(self, queues: set[str] | None) -> None:
        """Ready jobs may exist in `queues` (None: every queue): lease for idle workers."""
        if queues is None:
            self._empty.clear()
        else:
            self._empty.difference_update(queues)
        for worker in list(self._workers.values()):
            self._pump(worker)

    # -- socket ------------------------------------------------------------------------
    def _malformed(self, reason: str, detail: str = "") -> None:
        self.stats.malformed[reason] += 1
        now = time.monotonic()
        if now - self._last_malformed_log >= 1.0:
            self._last_malformed_log = now
            logger.warning(
                "dropped malformed frame (%s%s); %d dropped so far",
                reason, f": {detail}" if detail else "", sum(self.stats.malformed.values()),
            )

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._malformed("part_count", f"{len(frames)} parts")
            return
        ident, payload = frames
        try:
            kind, body = decode(payload, self.max_frame_bytes)
        except FrameError as exc:
            self._malformed(exc.reason, str(exc))
            return
        try:
            if kind == wire.ACK:
                self._on_ack(ident, body)
            elif kind == wire.HELLO:
                self._on_hello(ident, body)
            elif kind == wire.BYE:
                self._on_bye(ident)
            else:
                self._malformed("unexpected_kind", kind)
        except FrameError as exc:
            self._malformed(exc.reason, str(exc))

    def _on_hello(self, ident: bytes, body: Any) -> None:
        if not isinstance(body, dict):
            raise FrameError("bad_body", "hello needs a map")
        owner, credits, queues, pid = body.get("owner"), body.get("credits"), body.get("queues"), body.get("pid")
        if (
            not isinstance(owner, str) or not owner or owner.encode() != ident
            or not isinstance(credits, int) or isinstance(credits, bool) or not 0 < credits <= 1_000_000
            or not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues)
            or not isinstance(pid, int)
        ):
            raise FrameError("bad_body", "hello fields")
        if owner in self._dead_owners:
            logger.info("ignoring hello from dead worker %s", owner)
            return
        worker = self._workers.get(owner)
        if worker is None:
            worker = _Worker(owner, ident, tuple(queues), credits, pid)
            self._workers[owner] = worker
            self._by_ident[ident] = worker
            logger.info("worker %s (pid %d) ready with %d credits", owner, pid, credits)
        if self._workers_told_to_stop:  # it missed the broadcast: without this it runs until killed
            self._send(worker, encode(wire.STOP, None))
            return
        self._pump(worker)

    def _on_bye(self, ident: bytes) -> None:
        worker = self._by_ident.pop(ident, None)
        if worker is not None:
            self._workers.pop(worker.owner, None)
            if worker.held:  # a worker that says bye holds nothing; if it does, give them back
                self.writer.submit(jw.RELEASE, list(worker.held.items()))

    def _on_ack(self, ident: bytes, body: Any) -> None:
        if not isinstance(body, list):
            raise FrameError("bad_body", "ack needs a list")
        worker = self._by_ident.get(ident)
        completes: list[tuple[str, int]] = []
        failures: list[Failure] = []
        releases: list[tuple[str, int]] = []
        now = time.time()
        for item in body:
            if not isinstance(item, list) or len(item) != 5:
                self._malformed("bad_ack")
                continue
            job_id, lease_id, outcome, error, retry_in = item
            if (not isinstance(job_id, str) or not isinstance(lease_id, int) or isinstance(lease_id, bool)
                    or not 0 < lease_id <= MAX_LEASE_ID):
                # an out-of-range lease id matches no lease, and SQLite would refuse the int,
                # failing every ack committed in the same group with it
                self._malformed("bad_ack")
                continue
            if worker is not None and worker.held.pop(job_id, None) is not None:
                worker.credits += 1
            if outcome == OUTCOME_OK:
                completes.append((job_id, lease_id))
            elif outcome in (OUTCOME_ERROR, OUTCOME_DISCARD, OUTCOME_UNKNOWN):
                if not isinstance(error, str):
                    error = "error"
                delay = retry_in if isinstance(retry_in, (int, float)) and 0 <= retry_in < 1e9 else 1.0
                final = {OUTCOME_ERROR: None, OUTCOME_DISCARD: "failed", OUTCOME_UNKNOWN: "dead"}[outcome]
                failures.append(Failure(job_id, lease_id, error[:4000], now + delay, final))
            elif outcome == OUTCOME_RELEASE:
                releases.append((job_id, lease_id))
            else:
                self._malformed("bad_outcome")
        stats = self.stats
        if completes:
            stats.succeeded += len(completes)
            self.writer.submit(jw.COMPLETE, completes)
        if failures:
            stats.failed += len(failures)
            self.writer.submit(jw.FAIL, failures, self._after_retry)
        if releases:
            stats.released += len(releases)
            self.writer.submit(jw.RELEASE, releases, self._after_retry)
        if worker is not None:
            self._pump(worker)

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
        self.writer.submit(
            jw.LEASE,
            (worker.queues, worker.owner, free, self.lease_timeout),
            lambda jobs, error: self._on_leased(worker, free, jobs, error),
        )

    def _on_leased(self, worker: _Worker, asked: int, jobs: list[LeasedJob] | None, error: BaseException | None) -> None:
        worker.leasing = False
        if error is not None or jobs is None:
            logger.error("lease for %s failed: %s", worker.owner, error)
            self.loop.call_later(1.0, self._pump, worker)
            return
        if self._workers.get(worker.owner) is not worker:  # died meanwhile: give the jobs back
            if jobs:
                self.writer.submit(jw.RELEASE, [(j.id, j.lease_id) for j in jobs])
            return
        if len(jobs) < asked:
            self._empty.update(worker.queues)
        if not jobs:
            return
        budget = wire.payload_budget(self.max_frame_bytes)
        too_big = [j for j in jobs if len(j.payload) > budget]
        if too_big:  # written by a producer with a larger limit: it can never reach a worker
            self.writer.submit(jw.FAIL, [
                Failure(j.id, j.lease_id, f"payload of {len(j.payload):,} bytes does not fit in "
                        f"dispatcher.max_frame_bytes ({self.max_frame_bytes:,})", 0.0, "dead")
                for j in too_big])
            jobs = [j for j in jobs if len(j.payload) <= budget]
        # one JOBS message per frame's worth of payloads: a frame over the peer's MAXMSGSIZE
        # would make ZeroMQ drop the connection, and the jobs in it would never arrive
        batch: list[LeasedJob] = []
        size = 0
        for j in jobs:
            if batch and size + len(j.payload) > budget:
                self._send_jobs(worker, batch)
                batch, size = [], 0
            batch.append(j)
            size += len(j.payload)
        if batch:
            self._send_jobs(worker, batch)
        if len(jobs) + len(too_big) == asked:
            self._pump(worker)

    def _send_jobs(self, worker: _Worker, jobs: list[LeasedJob]) -> None:
        body = [[j.id, j.lease_id, j.task, j.payload, j.attempt, j.max_attempts, j.queue] for j in jobs]
        if not self._send(worker, encode(wire.JOBS, body)):
            self.writer.submit(jw.RELEASE, [(j.id, j.lease_id) for j in jobs], self._after_retry)
            return
        worker.credits -= len(jobs)
        held = worker.held
        for j in jobs:
            held[j.id] = j.lease_id
        self.stats.sent += len(jobs)

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

    # -- lease renewal ------------------------------------------------------------------
    def _schedule_renew(self) -> None:
        self._renew_handle = self.loop.call_later(self.lease_timeout / 3, self._renew)

    def _renew(self) -> None:
        owners = [w.owner for w in self._workers.values() if w.held]
        if owners:
            self.writer.submit(jw.RENEW, (owners, self.lease_timeout))
        self.writer.submit(jw.EXPIRE, None, lambda n, e: self.wake(None) if n else None)
        self._schedule_renew()
