"""Restart intensity: at most `intensity` restarts within `period` seconds (OTP semantics).

A sliding window over the monotonic clock: restart times older than `period`
fall out. The restart that would make the count exceed `intensity` is refused,
and the supervisor gives up (escalates to its parent).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """Counts restarts in a sliding window.

    Args:
        intensity: restarts allowed inside the window (OTP default 1).
        period: window length in seconds (OTP default 5).
        clock: monotonic clock, injectable for tests.
    """

    def __init__(self, intensity: int = 1, period: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        if intensity < 0 or isinstance(intensity, bool):
            raise ValueError(f"intensity must be an integer >= 0, got {intensity!r}")
        if not 0 < period < float("inf"):
            raise ValueError(f"period must be a finite number > 0, got {period!r}")
        self.intensity = intensity
        self.period = period
        self._clock = clock
        self._restarts: deque[float] = deque()

    def allow(self) -> bool:
        """Record one restart; return False when it exceeds the intensity (give up)."""
        now = self._clock()
        restarts = self._restarts
        while restarts and restarts[0] < now - self.period:  # one exactly `period` old still counts, as in OTP
            restarts.popleft()
        restarts.append(now)
        return len(restarts) <= self.intensity

    @property
    def recent(self) -> int:
        """Restarts inside the current window."""
        now = self._clock()
        return sum(1 for t in self._restarts if t >= now - self.period)
