"""A node paused whole (SIGSTOP of its process group) keeps its workers when it resumes.

The dispatcher's liveness check, run late because the node itself was stopped,
must not read its workers' silence in that window as theirs: they were stopped
with it. A real ``actorq run`` on SQLite, its node and workers stopped together
for longer than the heartbeat timeout while a job runs, then resumed.
"""

from __future__ import annotations

import asyncio
import os
import signal

from node_process import NodeProcess

from actorq import Job
from actorq.testing import Ledger, eventually

TASKS = """
started = Ledger(str(ledger.path) + ".started")


@registry.task("pause.hold")
async def hold(seconds):
    ctx = current_job()
    started.record(ctx.id, ctx.attempt, os.getpid())
    await asyncio.sleep(seconds)
    record()
"""

HEARTBEAT_TIMEOUT = 1.5


async def test_a_node_paused_past_the_heartbeat_timeout_keeps_its_workers_and_their_jobs(topology) -> None:
    topo = topology(TASKS, processes=2, concurrency=1, prefetch=0, heartbeat_interval=0.1,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT)
    started = Ledger(str(topo.ledger.path) + ".started")
    node = NodeProcess(topo, 1)
    try:
        with topo.client() as client:
            job_id = client.enqueue(Job("pause.hold", [3.0]))
        await eventually(lambda: started.count() == 1, timeout=60, message="the job started")
        workers = {p.pid for p in node.children()}
        os.killpg(node.pid, signal.SIGSTOP)  # the node and its workers, together
        try:
            await asyncio.sleep(3 * HEARTBEAT_TIMEOUT)  # the fault's length, not a wait for an outcome
        finally:
            os.killpg(node.pid, signal.SIGCONT)
        await eventually(lambda: topo.states().get(job_id) == "succeeded", timeout=60, message="the job finished")
        assert {p.pid for p in node.children()} == workers
        os.kill(node.pid, signal.SIGTERM)
        assert await node.exit_code(timeout=60) == 0, node.output()
    except BaseException:
        node.kill_everything()
        raise
    output = node.output()
    print(output[-2000:])
    info = topo.info(job_id)
    assert (info.attempts, info.errors) == (1, []), info  # not reclaimed as a crash: it ran once, where it was
    assert [e.job_id for e in started.read()] == [job_id]
    assert "the dispatcher did not run for" in output
    assert "silent for" not in output and "stale acks" not in output, "no worker was lost"
