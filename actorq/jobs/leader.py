"""Leadership: duties that must run on one node only, among the nodes sharing a journal.

Rescuing jobs whose lease expired (a node that died without a word) runs on the
leader only; cron ticks and pruning will too. The journal keeps one row per
duty name: a holder and an expiry set by the *database's* clock
(`Journal.try_lead`). The holder renews every third of the TTL.

The holder's own judgement uses its *monotonic* clock only, so a paused or
partitioned leader cannot act on stale authority::

    t0 = monotonic()                 # before asking
    ok = try_lead(name, me, ttl)     # the database sets expiry = its now() + ttl >= t0 + ttl
    deadline = t0 + ttl * SAFETY     # strictly before any other node can win

A leader paused past its deadline (SIGSTOP, a long GC, a lost connection)
answers False from `is_leader` as soon as it runs again, before another node
can take the duty over, and until a renewal succeeds. When unsure (the
renewal failed or timed out), it answers False. On an SQLite journal the one
node that holds the file lock is always the leader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

logger = logging.getLogger(__name__)

__all__ = ["Leadership"]

SAFETY = 0.8  # the share of the TTL a holder trusts itself: margin for clock rate differences


class Leadership:
    """One node's claim on one duty name, renewed on the node's loop.

    Args:
        name: the duty (e.g. ``"rescue"``).
        holder: who claims it: ``node/pid/incarnation``, never reused.
        ttl: seconds a claim lasts by the journal's clock unless renewed.
        try_lead: ``await try_lead(name, holder, ttl) -> bool`` through the journal writer.
        resign: ``await resign(name, holder)``.
        clock: the monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        holder: str,
        ttl: float,
        try_lead: Callable[[str, str, float], Awaitable[bool]],
        resign: Callable[[str, str], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"leadership ttl must be > 0, got {ttl!r}")
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self._try_lead = try_lead
        self._resign = resign
        self._clock = clock
        self._deadline = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.terms = 0  # times this holder became leader
        self.failures = 0

    def is_leader(self) -> bool:
        """True only while this holder's claim is surely still valid (see the module docstring)."""
        return self._clock() < self._deadline

    async def renew(self) -> bool:
        """Claim or renew once; returns `is_leader` afterwards."""
        was = self.is_leader()
        started = self._clock()
        try:
            held = await self._try_lead(self.name, self.holder, self.ttl)
        except Exception as exc:  # unsure: act as a follower until a renewal succeeds
            self.failures += 1
            held = False
            if was or self.failures == 1:
                logger.warning("leadership %s: renewal failed (%s); not acting as leader", self.name, exc)
        if held:
            self._deadline = started + self.ttl * SAFETY
            self.failures = 0
        else:
            self._deadline = float("-inf")
        now = self.is_leader()
        if now and not was:
            self.terms += 1
            logger.info("%s leads %s", self.holder, self.name)
        elif was and not now:
            logger.warning("%s no longer leads %s", self.holder, self.name)
        return now

    def start(self) -> None:
        """Renew every third of the TTL on the running loop. Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.renew()
            await asyncio.sleep(self.ttl / 3)

    async def stop(self) -> None:
        """Stop renewing and give the duty up at once if this holder has it."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.is_leader():
            self._deadline = float("-inf")
            try:
                await self._resign(self.name, self.holder)
            except Exception as exc:  # it expires by itself after the TTL
                logger.warning("leadership %s: could not resign (%s)", self.name, exc)
