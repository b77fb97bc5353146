"""Cron through real nodes: `actorq run` subprocesses killed around ticks (C5), and the API.

The schedules fire every second (croniter's six-field form, seconds last), so a
few seconds of a run cover several fire times. Fire times are read back from
the jobs' unique keys (``cron:<name>:<fire time>``) in the journal file; the
jobs' runs from the tasks' independent ledger.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from actorq import Node
from actorq.jobs.schedule import Schedule
from actorq.node.config import load_config
from actorq.testing import eventually
from node_process import NodeProcess

TASKS = """
@registry.task("cron.tick")
async def tick(label):
    record(label)
"""

EVERY_SECOND = """
[[schedules]]
name = "every-second"
cron = "* * * * * *"
task = "cron.tick"
args = ["file"]
catch_up = "all"
"""


def _fired(journal: Path, name: str) -> list[tuple[float, str]]:
    """``(fire time, state)`` of every job schedule `name` made, read from the journal file."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT unique_key, state FROM actorq_jobs WHERE unique_key LIKE ?",
                            (f"cron:{name}:%",)).fetchall()
    finally:
        conn.close()
    prefix = len(f"cron:{name}:")
    return sorted((float(key[prefix:]), state) for key, state in rows)


def _with_schedules(topo, text: str):
    with open(topo.toml_path, "a") as fp:
        fp.write(text)
    return load_config(topo.toml_path)


async def test_c5_node_killed_around_ticks_fires_each_time_exactly_once(topology, rng) -> None:
    await _killed_around_ticks(topology, rng, kills=2)  # more kills: the soak form below


@pytest.mark.soak
async def test_c5_soak_many_kills_around_ticks(topology, rng) -> None:
    await _killed_around_ticks(topology, rng, kills=25)


async def _killed_around_ticks(topology, rng, kills: int) -> None:  # noqa: ANN001
    """C5: SIGKILL the node (its scheduler included) `kills` times at random moments around
    a tick of an every-second schedule; then each fire time fired exactly once."""
    topo = topology(TASKS, processes=1, concurrency=4, log_level="info")
    _with_schedules(topo, EVERY_SECOND)
    for run in range(1, kills + 1):
        node = NodeProcess(topo, run)
        try:
            before = len(_fired(topo.journal_path, "every-second")) if topo.journal_path.exists() else 0
            # this run fires (and so leads), then is killed at a random moment around a tick
            await eventually(lambda: topo.journal_path.exists()
                             and len(_fired(topo.journal_path, "every-second")) > before,
                             timeout=60, message=f"run {run} fired")
            await asyncio.sleep(rng.uniform(0.0, 1.2))  # fault injection: where in the tick the kill lands
            os.killpg(node.pid, signal.SIGKILL)
            assert await node.exit_code(timeout=30) == -signal.SIGKILL
        except BaseException:
            node.kill_everything()
            raise
    # a last run: catches up (catch_up = "all"), runs every job, and stops cleanly
    before = len(_fired(topo.journal_path, "every-second"))
    last = NodeProcess(topo, kills + 1)
    try:
        def settled() -> bool:  # this run fired a few times itself, and the jobs before those ran
            fired = _fired(topo.journal_path, "every-second")
            return len(fired) > before + 3 and all(s == "succeeded" for _, s in fired[:-3])
        await eventually(settled, timeout=60, message="the last run caught up and ran the jobs")
        os.kill(last.pid, signal.SIGTERM)
        assert await last.exit_code(timeout=60) == 0, last.output()[-3000:]
    except BaseException:
        last.kill_everything()
        raise
    fired = _fired(topo.journal_path, "every-second")
    times = [t for t, _ in fired]
    print(f"{len(times)} fire times over {kills} kills")
    assert len(times) == len(set(times)), "a fire time fired twice"
    # every second from the first fire time to the last fired, once: nothing skipped (all), nothing doubled
    assert times == [times[0] + n for n in range(len(times))]
    assert {s for _, s in fired[:-3]} == {"succeeded"}  # and the jobs ran (the newest may still be running)
    ran = {e.job_id for e in topo.ledger.read()}
    assert len(ran) >= len(times) - 3


async def test_schedules_added_through_the_api_fire_and_their_jobs_run(topology) -> None:
    topo = topology(TASKS, processes=1, concurrency=2)
    async with Node(topo.config) as node:
        await node.schedules.add(Schedule("api-every-second", "* * * * * *", "cron.tick", args=("api",)))
        await eventually(lambda: any(e.tag.endswith("/api") for e in topo.ledger.read()), timeout=30,
                         message="a job of the API schedule ran")
        listed = await node.schedules.list()
        assert [(i.schedule.name, i.source) for i in listed] == [("api-every-second", "api")]
        assert listed[0].last_fired is not None and listed[0].next_fire > listed[0].last_fired
        assert await node.schedules.remove("api-every-second") is True
        assert await node.schedules.list() == []
    fired = _fired(topo.journal_path, "api-every-second")
    assert len(fired) == len({t for t, _ in fired}) >= 1


async def test_two_nodes_on_postgresql_only_the_leader_fires_and_each_time_once(topology, pg_schema) -> None:
    from journal_support import PG_URL
    import psycopg

    topos = [topology(TASKS, processes=1, concurrency=2, journal_url=PG_URL, schema=pg_schema, name=name,
                      leader_ttl=15.0, toml_name=f"{name}.toml") for name in ("node-a", "node-b")]
    configs = [_with_schedules(topo, EVERY_SECOND) for topo in topos]

    def fired() -> list[tuple[float, str]]:
        with psycopg.connect(PG_URL) as conn:
            rows = conn.execute(f'SELECT unique_key, state FROM "{pg_schema}".actorq_jobs').fetchall()
        return sorted((float(key.rsplit(":", 1)[1]), state) for key, state in rows)

    async with Node(configs[0]) as a, Node(configs[1]) as b:
        await eventually(lambda: len(fired()) >= 5, timeout=60, message="five fire times fired")
        crons = [node.runtime.cron for node in (a, b)]  # type: ignore[union-attr]
        leaders = [node.runtime.is_leader() for node in (a, b)]  # type: ignore[union-attr]
    assert leaders.count(True) == 1, leaders
    follower = crons[leaders.index(False)]
    assert follower is not None and follower.fired == 0  # a follower never fires
    times = [t for t, _ in fired()]
    assert len(times) == len(set(times)) and times == [times[0] + n for n in range(len(times))]
    ran = [e for topo in topos for e in topo.ledger.read()]
    assert len({e.job_id for e in ran}) >= len(times) - 2  # both nodes' workers ran them
