"""The scheduler: promotes due jobs and keeps the dispatcher looking for work.

Every `poll_interval` seconds it asks the journal writer to move due
``scheduled`` and ``retry`` jobs to ``ready``, then wakes the dispatcher for
every queue. The wake also picks up jobs that other processes wrote straight
into the journal (`actorq enqueue`, `actorq.Client`), so polling stays the
path that makes work visible, whatever else wakes the dispatcher sooner.
"""

from __future__ import annotations

import asyncio
import logging
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
    """

    def __init__(self, writer: jw.JournalWriter, loop: asyncio.AbstractEventLoop, poll_interval: float,
                 wake: Callable[[set[str] | None], None]) -> None:
        self.writer = writer
        self.loop = loop
        self.poll_interval = poll_interval
        self.wake = wake
        self.promoted = 0
        self.ticks = 0
        self._handle: asyncio.TimerHandle | None = None
        self._busy = False

    def start(self) -> None:
        """Start ticking. Idempotent."""
        if self._handle is None:
            self._handle = self.loop.call_soon(self._tick)

    def stop(self) -> None:
        """Stop ticking. Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

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
