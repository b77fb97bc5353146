"""Retention end to end: a real node with real workers prunes finished jobs past their retention.

Retention of "0s" makes every finished job due at once, and the test drives the
upkeep's prune itself (`Scheduler.prune`) instead of waiting for its timer; it then
waits on the scheduler's counters and the journal's rows, never on a deadline. On
PostgreSQL two nodes share the journal and only the leader prunes.
"""

from __future__ import annotations

import asyncio

import pytest

from actorq import Client, Job, JobFailed, Node
from actorq.testing import eventually

pytestmark = pytest.mark.timeout(120)

TASKS = """
@registry.task("ret.double")
def double(n):
    return 2 * n


@registry.task("ret.boom", max_attempts=1)
def boom():
    raise ValueError("kept for a person to see")
"""

RETENTION = {"retain_succeeded": "0s", "retain_cancelled": "0s", "retain_dead": "forever"}


async def test_finished_jobs_leave_the_journal_by_their_states_retention(topology) -> None:
    topo = topology(TASKS, processes=1, journal_extra=RETENTION)
    async with Node(topo.config) as node:
        queue = node.queue("default")
        values = await asyncio.gather(*(queue.ask(Job("ret.double", [n]), timeout=30) for n in range(20)))
        assert values == [2 * n for n in range(20)]
        with pytest.raises(JobFailed) as raised:
            await queue.ask(Job("ret.boom"), timeout=30)
        dead = raised.value.job_id
        later = queue.tell(Job("ret.double", [0], delay=3600.0))  # scheduled: live, never pruned
        scheduler = node.runtime.scheduler
        assert scheduler is not None
        scheduler.prune()  # the upkeep's run, now (or one is under way already)
        # the counter moves on the loop once the commit's callback runs: wait for both
        await eventually(lambda: scheduler.pruned == 20 and topo.states() == {dead: "dead", later: "scheduled"},
                         timeout=60, message="the succeeded jobs were pruned; the dead and the scheduled ones stay")
        with Client(topo.config.journal.resolved_url) as client:
            assert client.get(dead) is not None and client.get(dead).errors == [  # type: ignore[union-attr]
                "ValueError: kept for a person to see"]
            assert client.cancel(later)  # cancelled: due at once under "0s"
        scheduler.prune()
        await eventually(lambda: topo.states() == {dead: "dead"}, timeout=60, message="the cancelled job was pruned")


async def test_two_nodes_on_postgresql_only_the_leader_prunes(topology, pg_schema) -> None:
    from journal_support import PG_URL

    topos = [topology(TASKS, processes=1, concurrency=2, journal_url=PG_URL, schema=pg_schema, name=name,
                      journal_extra=RETENTION, toml_name=f"{name}.toml") for name in ("node-a", "node-b")]
    async with Node(topos[0].config) as a, Node(topos[1].config) as b:
        nodes = (a, b)
        await eventually(lambda: any(n.runtime.is_leader() for n in nodes), timeout=60, message="a leader")
        leader, follower = sorted(nodes, key=lambda n: not n.runtime.is_leader())
        values = await asyncio.gather(*(follower.queue("default").ask(Job("ret.double", [n]), timeout=30)
                                        for n in range(10)))
        assert values == [2 * n for n in range(10)]
        assert not follower.runtime.scheduler.prune()  # a follower never starts a run
        leader.runtime.scheduler.prune()
        await eventually(lambda: leader.runtime.scheduler.pruned == 10 and topos[0].states() == {}, timeout=60,
                         message="the leader pruned every job")
        assert follower.runtime.scheduler.pruned == 0
