"""Retry policies: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``min(cap, base * factor ** (attempt - 1))`` ± `jitter`.

    With the defaults the waits are about 1 s, 2 s, 4 s, ... capped at one hour.

    Attributes:
        base: seconds before the second attempt.
        factor: growth per attempt.
        cap: the longest wait, in seconds.
        jitter: relative spread (0.2 = ±20 %) so that failed jobs do not retry in lockstep.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid retry policy {self!r}")

    def delay(self, attempt: int, spread: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Args:
            attempt: the attempt that failed.
            spread: where in the jitter band to land, in [0, 1) (0: the shortest wait);
                None draws it at random.
        """
        if spread is None:
            spread = random.random()
        wait = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return wait * (1 - self.jitter + 2 * self.jitter * spread)
