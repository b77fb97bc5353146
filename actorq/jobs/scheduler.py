"""The scheduler: promotes due jobs, rescues expired leases, keeps the dispatcher looking for work,
maintains the journal.

Every `poll_interval` seconds it asks the journal whether a ``scheduled`` or
``retry`` job is due (a read, which takes no write lock), and only then asks
the writer to move the due ones to ``ready``, then wakes the dispatcher. With
nothing due, it wakes the dispatcher only if one of the node's queues has a
ready job: a wake makes the dispatcher lease, and a lease is a write. That
wake picks up jobs other processes wrote straight into the journal (`actorq
enqueue`, `actorq.Client`) or released, so polling stays the path that makes
work visible, whatever else wakes the dispatcher sooner.

Every `rescue_every` seconds, while this node leads the rescue (`is_leader`), it
asks the writer to take back every lease that expired by the journal's clock
(a node or worker that died without a word, or was paused past its lease).

On a journal shared by several nodes, the writer here is the node's *duty*
writer: a connection of its own, so a promotion or a rescue never delays the
acks and leases of the main writer, and a wait there never blocks them.

Every `maintain_every` seconds it asks the writer to run the journal's own
`Journal.maintain` outside any transaction (on SQLite: a TRUNCATE checkpoint
once the WAL passes its limit, E9); what it did is logged. In the same upkeep
it removes expired results (one batch), and, while this node leads, prunes
finished jobs past their retention (`prune`)::

    upkeep ──▶ prune batch (≤ PRUNE_BATCH rows) ──commit──▶ full batch? ──yes──▶ next batch, queued
                                                               │                 behind what else the
                                                               no: done          writer was given
                                                                                 meanwhile

A batch is one op of a group commit, and the next is submitted only once it has
committed: a group holds one batch at most, beside the acks, leases and
enqueues submitted meanwhile, so a backlog of pruning (a day of jobs after a
restart) delays them by one batch's delete at most.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from typing import Any, Callable, Mapping, Sequence

from actorq.jobs import journal_writer as jw
from actorq.jobs.outcome import AttemptEnd
from actorq.journal.protocol import JobState

logger = logging.getLogger(__name__)
EXPIRE_BATCH = 500  # expired results removed per upkeep run: a short write, never a long sweep
PRUNE_BATCH = 500  # finished jobs deleted per write (a few ms on SQLite); more batches follow while a backlog lasts


class Scheduler:
    """Periodic promotion of due jobs, rescue of expired leases, and journal maintenance.

    Args:
        writer: the journal writer (the duty writer on a shared journal).
        loop: the node's loop.
        poll_interval: seconds between ticks.
        wake: called after each tick (the dispatcher's `wake`).
        maintain_every: seconds between runs of the journal's maintenance.
        rescue_every: seconds between rescues of expired leases.
        is_leader: whether this node leads the rescue and the pruning now (one node among those
            sharing a journal).
        queues: the queues this node's workers take jobs from: a tick wakes the dispatcher
            only when one of them has a ready job (or a job was promoted).
        retention: ``{final state: seconds}`` finished jobs are kept before they are pruned;
            a state left out is kept forever (``JournalConfig.retention``).
    """

    def __init__(self, writer: jw.JournalWriter, loop: asyncio.AbstractEventLoop, poll_interval: float,
                 wake: Callable[[set[str] | None], None], maintain_every: float, *,
                 rescue_every: float = 60.0, is_leader: Callable[[], bool] = lambda: True,
                 queues: Sequence[str] = ("default",), retention: Mapping[JobState, float] | None = None) -> None:
        self.writer = writer
        self.queues = tuple(queues)
        self.loop = loop
        self.poll_interval = poll_interval
        self.wake = wake
        self.maintain_every = maintain_every
        self.rescue_every = rescue_every
        self.is_leader = is_leader
        self.rescued = 0
        self.promoted = 0
        self.ticks = 0
        self.maintenance = 0  # maintenance runs that did something (e.g. a WAL checkpoint)
        self.retention = dict(retention or {})
        self.pruned = 0  # finished jobs this scheduler pruned
        self.prune_runs = 0  # prune runs ended (a test signal): each went on until no full batch was left
        self._handle: asyncio.TimerHandle | None = None
        self._maintain_handle: asyncio.TimerHandle | None = None
        self._rescue_handle: asyncio.TimerHandle | None = None
        self._busy = False
        self._maintaining = False
        self._rescuing = False
        self._pruning = False
        self._run_pruned = 0

    def start(self) -> None:
        """Start ticking. Idempotent."""
        if self._handle is None:
            self._handle = self.loop.call_soon(self._tick)
            self._maintain_handle = self.loop.call_later(self.maintain_every, self._maintain)
            self._rescue_handle = self.loop.call_later(self.rescue_every, self._rescue)

    def stop(self) -> None:
        """Stop ticking. Idempotent."""
        for handle in (self._handle, self._maintain_handle, self._rescue_handle):
            if handle is not None:
                handle.cancel()
        self._handle = self._maintain_handle = self._rescue_handle = None

    def _rescue(self) -> None:
        self._rescue_handle = self.loop.call_later(self.rescue_every, self._rescue)
        if self._rescuing or not self.is_leader():  # rescuing is the leader's duty among nodes
            return
        self._rescuing = True
        self.writer.submit(jw.RECLAIM, jw.Reclaim(AttemptEnd.LEASE_EXPIRED, "lease expired"), self._rescued)

    def _rescued(self, count: Any, error: BaseException | None) -> None:
        self._rescuing = False
        if error is not None:  # the next round tries again
            logger.warning("rescue of expired leases failed: %s", error)
        elif count:
            self.rescued += count
            logger.warning("rescued %d jobs whose lease expired", count)
            self.wake(None)

    def _maintain(self) -> None:
        self._maintain_handle = self.loop.call_later(self.maintain_every, self._maintain)
        if self._maintaining:
            return
        self._maintaining = True
        self.writer.submit(jw.OUTSIDE, operator.methodcaller("maintain"), self._maintained)
        # expired results go in small batches, one per run: no sweep holds the journal for long
        self.writer.submit(jw.CALL, operator.methodcaller("expire_results", EXPIRE_BATCH), self._results_expired)
        self.prune()

    def prune(self) -> bool:
        """Start a run of pruning finished jobs past their retention, one `PRUNE_BATCH` a write.

        Runs on the loop; the upkeep calls it, a test may too. Nothing starts while a run is
        under way, when no state has a limited retention, when the scheduler is stopped, or
        when this node does not lead (on a journal shared by several nodes, one prunes).

        Returns:
            Whether a run started.
        """
        if self._pruning or not self.retention or self._handle is None or not self.is_leader():
            return False
        self._pruning = True
        self._run_pruned = 0
        self._prune_batch()
        return True

    def _prune_batch(self) -> None:
        self.writer.submit(jw.CALL, operator.methodcaller("prune", self.retention, PRUNE_BATCH), self._pruned_batch)

    def _pruned_batch(self, removed: Any, error: BaseException | None) -> None:
        if error is None:
            self.pruned += removed
            self._run_pruned += removed
            if removed >= PRUNE_BATCH and self._handle is not None and self.is_leader():
                # a backlog: the next batch joins the writer's next group, behind what was queued meanwhile
                self._prune_batch()
                return
        else:  # the next upkeep tries again
            logger.warning("pruning finished jobs failed (tried again at the next upkeep): %s", error)
        self._pruning = False
        self.prune_runs += 1
        if self._run_pruned:
            logger.debug("pruned %d finished jobs past their retention", self._run_pruned)

    def _results_expired(self, removed: Any, error: BaseException | None) -> None:
        if error is not None:
            logger.warning("removing expired results failed (tried again at the next upkeep): %s", error)
        elif removed:
            logger.debug("removed %d expired results", removed)

    def _maintained(self, report: Any, error: BaseException | None) -> None:
        self._maintaining = False
        if error is not None:  # the next round tries again
            logger.warning("journal maintenance failed: %s", error)
        elif report:
            self.maintenance += 1
            logger.info("journal maintenance: %s", report)

    def _tick(self) -> None:
        self._handle = self.loop.call_later(self.poll_interval, self._tick)
        if self._busy:  # the last promotion has not committed yet: skip, never pile up
            return
        self._busy = True
        # reads first, outside any transaction: an idle node never takes the journal's write lock
        queues = self.queues
        self.writer.submit(jw.OUTSIDE, lambda journal: (journal.has_due(), journal.has_ready(queues)), self._checked)

    def _checked(self, found: Any, error: BaseException | None) -> None:
        if error is None and not found[0]:
            self._busy = False
            self.ticks += 1
            if found[1]:  # ready jobs (another process's, a release): the dispatcher leases them
                self.wake(None)
            return
        self.writer.submit(jw.PROMOTE, None, self._promoted)  # due, or unsure: the write decides

    def _promoted(self, count: Any, error: BaseException | None) -> None:
        self._busy = False
        self.ticks += 1
        if error is not None:
            logger.error("promotion of due jobs failed: %s", error)
            return
        if count:
            self.promoted += count
            logger.debug("promoted %d due jobs", count)
        self.wake(None)
