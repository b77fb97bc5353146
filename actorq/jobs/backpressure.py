"""Blocking enqueues: a producer that meets `QueueFull` may wait for room, up to `block` seconds.

The journal refuses at once (`actorq.QueueFull`); waiting is the producer's: it sends the
whole batch again after a short sleep, doubling from `FIRST_DELAY` to `MAX_DELAY`, until
it fits or `block` seconds have passed, then raises the last refusal. Sending a batch
again is safe: ids already committed are skipped and take no room.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

FIRST_DELAY, MAX_DELAY = 0.01, 0.5  # seconds between tries of a blocked enqueue
MAX_BLOCK = 86_400.0  # the longest a producer may block, seconds


def check_block(block: object) -> float:
    """`block` as seconds from 0 to `MAX_BLOCK`; raise ValueError otherwise."""
    if not (isinstance(block, (int, float)) and not isinstance(block, bool) and math.isfinite(block)
            and 0 <= block <= MAX_BLOCK):
        raise ValueError(f"block must be a number of seconds from 0 to {MAX_BLOCK:.0f}, got {block!r}")
    return float(block)


def pauses(block: float) -> Iterator[float]:
    """The sleeps between tries of an enqueue blocked for up to `block` seconds (none when 0):
    each is cut to what is left, and the iteration ends at the deadline."""
    now = time.monotonic
    deadline = now() + block
    delay = FIRST_DELAY
    while (left := deadline - now()) > 0:
        yield min(delay, left)
        delay = min(delay * 2, MAX_DELAY)
