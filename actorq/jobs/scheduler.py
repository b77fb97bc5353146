"""The scheduler: promotes due jobs, keeps the dispatcher looking for work, maintains the journal.

Every `poll_interval` seconds it asks the journal writer to move due
``scheduled`` and ``retry`` jobs to ``ready``, then wakes the dispatcher for
every queue. The wake also picks up jobs that other processes wrote straight
into the journal (`actorq enqueue`, `actorq.Client`), so polling stays the
path that makes work visible, whatever else wakes the dispatcher sooner.

Every `maintain_every` seconds it asks the writer to run the journal's own
`Journal.maintain` outside any transaction (on SQLite: a TRUNCATE checkpoint
once the WAL passes its limit, E9); what it did is logged.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from typing import Any, Callable

from actorq.jobs import journal_writer as jw

logger = logging.getLogger(__name__)


class Scheduler:
    """Periodic promotion of due jobs.

    Args:
        writer: the journal writer.
        loop: the node's loop.
        poll_interval: seconds between ticks.
        wake: called after each tick (the dispatcher's `wake`).
        maintain_every: seconds between runs of the journal's maintenance.
    """

    def __init__(self, writer: jw.JournalWriter, loop: asyncio.AbstractEventLoop, poll_interval: float,
                 wake: Callable[[set[str] | None], None], maintain_every: float) -> None:
        self.writer = writer
        self.loop = loop
        self.poll_interval = poll_interval
        self.wake = wake
        self.maintain_every = maintain_every
        self.promoted = 0
        self.ticks = 0
        self.maintenance = 0  # maintenance runs that did something (e.g. a WAL checkpoint)
        self._handle: asyncio.TimerHandle | None = None
        self._maintain_handle: asyncio.TimerHandle | None = None
        self._busy = False
        self._maintaining = False

    def start(self) -> None:
        """Start ticking. Idempotent."""
        if self._handle is None:
            self._handle = self.loop.call_soon(self._tick)
            self._maintain_handle = self.loop.call_later(self.maintain_every, self._maintain)

    def stop(self) -> None:
        """Stop ticking. Idempotent."""
        for handle in (self._handle, self._maintain_handle):
            if handle is not None:
                handle.cancel()
        self._handle = self._maintain_handle = None

    def _maintain(self) -> None:
        self._maintain_handle = self.loop.call_later(self.maintain_every, self._maintain)
        if self._maintaining:
            return
        self._maintaining = True
        self.writer.submit(jw.OUTSIDE, operator.methodcaller("maintain"), self._maintained)

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
        self.writer.submit(jw.PROMOTE, None, self._promoted)

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
