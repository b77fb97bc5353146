"""Counting what a socket drops, with a log that cannot flood.

A receiver drops every frame that fails validation and counts it by reason
(the `FrameError.reason` tag, or its own: ``part_count``, ``bad_body``,
``busy``...). A peer can send thousands of bad frames a second, so the log
gets at most one line per interval, carrying the running count::

    control: dropped a frame (too_deep: nested deeper than 64 levels); 8731 so far {'too_deep': 8731}
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

logger = logging.getLogger(__name__)

__all__ = ["DropCounter"]


class DropCounter:
    """The frames one socket dropped, by reason, logged at most once per `interval`.

    Args:
        socket: names the socket in the log line (``"control"``, ``"remote actors"``).
        log: the logger of the module that owns the socket.
        event: what is counted, in the log line (``"dropped a frame"``, ``"a request failed"``).
        interval: the least number of seconds between two log lines.
        clock: a monotonic clock (tests pass their own).
        counts: the counter to add to, when the owner exposes it (e.g. in its stats); a new one by default.

    Attributes:
        by_reason: how many frames were dropped for each reason.
        total: how many frames were dropped in all.
    """

    def __init__(self, socket: str, log: logging.Logger, *, event: str = "dropped a frame",
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 counts: Counter[str] | None = None) -> None:
        self.socket = socket
        self.event = event
        self.by_reason: Counter[str] = Counter() if counts is None else counts
        self.total = sum(self.by_reason.values())
        self._log = log
        self._interval = interval
        self._clock = clock
        self._logged_at: float | None = None

    def drop(self, reason: str, detail: str = "", *, count: int = 1, exc_info: bool = False) -> None:
        """Count `count` events (frames, or items of one frame); log unless a line was logged less than `interval` ago.

        Args:
            reason: a short stable tag (the counter's key).
            detail: what was wrong, already made safe to print (see `actorq.transports.codec.describe`).
            count: how many were dropped for this reason.
            exc_info: add the exception being handled to the line (for a failing handler).
        """
        self.by_reason[reason] += count
        self.total += count
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._interval:
            return
        self._logged_at = now
        self._log.warning("%s: %s (%s%s); %d so far %s", self.socket, self.event, reason,
                          f": {detail}" if detail else "", self.total, dict(self.by_reason), exc_info=exc_info)
