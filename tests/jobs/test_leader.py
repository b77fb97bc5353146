"""Leadership of once-only duties among nodes (ACCEPTANCE C16), on the real PostgreSQL.

Two holders, each with its own journal connection, claim one duty. A paused
leader (it stops renewing; its loop does not run) must stop acting at its own
deadline on its monotonic clock, before the other can win by the database's
clock; when unsure, `is_leader` answers False.
"""

from __future__ import annotations

import asyncio
import time

from actorq.jobs.leader import SAFETY, Leadership
from actorq.journal import open_journal


def _holder(url: str, schema: str, name: str, ttl: float) -> tuple[Leadership, object]:
    journal = open_journal(url, schema=schema)

    async def try_lead(duty: str, holder: str, seconds: float) -> bool:
        return await asyncio.to_thread(journal.try_lead, duty, holder, seconds)

    async def resign(duty: str, holder: str) -> bool:
        return await asyncio.to_thread(journal.resign, duty, holder)

    return Leadership("rescue", name, ttl, try_lead, resign), journal


async def test_c16_a_paused_leader_stops_before_another_node_can_win(pg_schema):
    from journal_support import PG_URL

    ttl = 2.0
    a, ja = _holder(PG_URL, pg_schema, "node-a/1/aa", ttl)
    b, jb = _holder(PG_URL, pg_schema, "node-b/2/bb", ttl)
    try:
        assert await a.renew() and a.is_leader()
        assert not await b.renew() and not b.is_leader()  # one leader at a time
        # A is paused from here on: it does not renew. B keeps trying, as its loop would.
        paused_at = time.monotonic()
        while not await b.renew():
            assert time.monotonic() - paused_at < 30, "B never took over"
            await asyncio.sleep(0.05)
        # the moment B leads, A has already stopped trusting itself (its deadline came first)
        assert not a.is_leader()
        assert b.terms == 1 and a.terms == 1
        # A resumes: its renewal is refused while B holds the duty, so it stays a follower
        assert not await a.renew() and not a.is_leader()
        # B stops (a node shutting down): it resigns, and A may take over at once
        await b.stop()
        assert await a.renew() and a.is_leader()
    finally:
        ja.close()  # type: ignore[attr-defined]
        jb.close()  # type: ignore[attr-defined]


async def test_c16_when_unsure_is_leader_answers_false():
    calls = []

    async def flaky(duty: str, holder: str, seconds: float) -> bool:
        calls.append(duty)
        if len(calls) > 1:
            raise ConnectionError("journal unreachable")
        return True

    async def resign(duty: str, holder: str) -> bool:
        return True

    now = [100.0]
    leader = Leadership("rescue", "n/1/x", 10.0, flaky, resign, clock=lambda: now[0])
    assert await leader.renew() and leader.is_leader()
    now[0] += 10.0 * SAFETY - 0.001
    assert leader.is_leader()  # within its local deadline
    now[0] += 0.002
    assert not leader.is_leader()  # past it, without any news: a follower
    assert not await leader.renew() and not leader.is_leader()  # the renewal failed: unsure, so no
