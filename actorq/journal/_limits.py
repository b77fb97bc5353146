"""Queue limits shared by both journals: the cached stored limits and the room arithmetic.

Queues without limits take none of these paths: a journal looks its batch's queues up in
a dict it refreshes every `QUEUE_LIMITS_TTL` seconds, and only a listed queue pays the
counting statements (docs/flow-control.md).
"""

from __future__ import annotations

import time
from typing import Callable, Collection, Mapping, Sequence

from actorq.errors import QueueFull
from actorq.journal.protocol import MAX_QUEUE_LIMIT, QUEUE_LIMITS_TTL, NewJob, QueueLimits


def check_limits(limits: Sequence[QueueLimits]) -> None:
    """Raise ValueError for a limit that is not an integer from 1 to `MAX_QUEUE_LIMIT` (or None)."""
    for item in limits:
        for name in ("concurrency", "node_concurrency", "max_depth"):
            value = getattr(item, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                          and 1 <= value <= MAX_QUEUE_LIMIT):
                raise ValueError(f"queue {item.queue!r}: {name} must be an integer from 1 to "
                                 f"{MAX_QUEUE_LIMIT:,} or None, got {value!r}")


class LimitsCache:
    """The stored queue limits, read again once `ttl` seconds old; plus this node's own
    ``node_concurrency`` values (never stored)."""

    def __init__(self, ttl: float = QUEUE_LIMITS_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._stored: dict[str, QueueLimits] = {}
        self._read_at: float | None = None
        self.node: dict[str, int] = {}
        self.node_prefix = ""

    def get(self, read: Callable[[], dict[str, QueueLimits]]) -> dict[str, QueueLimits]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.ttl:
            self._stored = read()
            self._read_at = now
        return self._stored

    def forget(self) -> None:
        """Read the stored limits again on next use (after `declare_queues`)."""
        self._read_at = None

    def lease_limited(self, stored: Mapping[str, QueueLimits], queues: Sequence[str]) -> list[str]:
        """Those of `queues` with a stored concurrency or this node's node_concurrency, in one order."""
        node = self.node
        return sorted(q for q in queues if (q in stored and stored[q].concurrency is not None) or q in node)


def depth_limited(stored: Mapping[str, QueueLimits], jobs: Sequence[NewJob]) -> list[str]:
    """The queues of `jobs` with a stored max_depth, sorted (the lock order)."""
    if not stored:
        return []
    return sorted({j.queue for j in jobs if j.queue in stored and stored[j.queue].max_depth is not None})


def admit(jobs: Sequence[NewJob], rooms: Mapping[str, tuple[int, int]],
          refused: list[tuple[NewJob, QueueFull]] | None, present: Collection[str] = ()) -> list[NewJob]:
    """The jobs that fit, in batch order; `rooms` is ``{queue: (depth, max_depth)}``.

    The jobs past a queue's room are appended to `refused` with their error; without
    `refused`, the first one raises `QueueFull` (nothing of the batch is inserted). A job
    whose id is `present` (a re-send: the insert skips it) takes no room, so a producer
    may send a partly refused batch again whole.
    """
    taken = {queue: 0 for queue in rooms}
    kept: list[NewJob] = []
    for job in jobs:
        if job.queue in rooms and job.id not in present:
            depth, most = rooms[job.queue]
            if depth + taken[job.queue] >= most:
                error = QueueFull(job.queue, depth + taken[job.queue], most)
                if refused is None:
                    raise error
                refused.append((job, error))
                continue
            taken[job.queue] += 1
        kept.append(job)
    return kept


def room(limit: int, concurrency: int | None, node_limit: int | None, leased: int, node_leased: int) -> int:
    """How many a lease may take of one queue: `limit`, at most what each bound leaves."""
    if concurrency is not None:
        limit = min(limit, concurrency - leased)
    if node_limit is not None:
        limit = min(limit, node_limit - node_leased)
    return max(0, limit)
