"""Crash recovery that is fenced and exact (ACCEPTANCE C3, C9, C11, C12; on_crash).

Real worker processes, a real SQLite journal, real ZeroMQ sockets. Each test
counts every job in an independent ledger and checks the total queue and the
journal invariants at the end.
"""

from __future__ import annotations

import os
import signal

from actorq import Job, Node
from actorq.testing import Ledger, check_total_queue, eventually, journal_invariants

TASKS = """
import time

started = Ledger(str(ledger.path) + ".started")


@registry.task("rec.hold")
def hold(seconds):
    ctx = current_job()
    started.record(ctx.id, ctx.attempt, os.getpid(), incarnation())
    time.sleep(seconds)
    record()


@registry.task("rec.quick")
async def quick(n):
    await asyncio.sleep(0.01)
    record()


@registry.task("rec.once", on_crash="fail")
async def once():
    record()
    die()


@registry.task("rec.again")
async def again():
    record()
    if current_job().attempt == 1:
        die()
"""


def _succeeded(states: dict[str, str]) -> set[str]:
    return {job_id for job_id, state in states.items() if state == "succeeded"}


async def _started_by(ledger: Ledger, job_id: str, attempt: int, timeout: float = 30.0) -> int:
    """Wait until `job_id`'s `attempt` has started; return the pid running it."""
    found: list[int] = []

    def started() -> bool:
        for entry in ledger.read():
            if entry.job_id == job_id and entry.attempt == attempt:
                found.append(entry.pid)
                return True
        return False

    await eventually(started, timeout=timeout, message=f"job {job_id} attempt {attempt} started")
    return found[0]


# -- C9 --------------------------------------------------------------------------------------
async def test_c9_paused_worker_loses_its_job_and_its_late_ack_is_fenced(topology):
    topo = topology(TASKS, processes=2, concurrency=1, prefetch=0,
                    heartbeat_interval=0.1, heartbeat_timeout=1.5)
    started = Ledger(str(topo.ledger.path) + ".started")
    pauses = 3
    accepted: set[str] = set()
    async with Node(topo.config) as node:
        await eventually(lambda: node.dispatcher.worker_count == 2, timeout=30, message="workers up")
        for cycle in range(1, pauses + 1):
            job_id = await node.queue().enqueue(Job("rec.hold", [0.5]))
            accepted.add(job_id)
            paused = await _started_by(started, job_id, 1)
            assert paused in node.worker_pids()
            os.kill(paused, signal.SIGSTOP)
            try:
                # silent past the heartbeat timeout: its lease is taken away, the job runs elsewhere
                await eventually(lambda: topo.states().get(job_id) == "succeeded", timeout=60,
                                 message="the paused worker's job completed by the other worker")
                assert await _started_by(started, job_id, 2) != paused
                assert node.dispatcher.stats.lost_workers == cycle
            finally:
                os.kill(paused, signal.SIGCONT)
            # resumed: its job finishes there too, and that ack carries the old lease: rejected
            await eventually(lambda: node.writer.stats.stale_acks >= cycle, timeout=30,
                             message="the resumed worker's late ack was fenced and counted")
            await eventually(lambda: node.dispatcher.worker_count == 2, timeout=30,
                             message="the resumed worker announced itself again")
            assert paused in node.worker_pids(), "a paused worker is not killed, only fenced"
        # the resumed workers take new work
        more = await node.queue().enqueue_many([Job("rec.quick", [i]) for i in range(40)])
        accepted.update(more)
        await node.wait_idle(timeout=60)
        pids_after = {e.pid for e in topo.ledger.read() if e.job_id in set(more)}
        worker_pids = set(node.worker_pids())
        stale = node.writer.stats.stale_acks
    assert pids_after == worker_pids, "both workers, the resumed ones too, ran new jobs"
    assert stale == pauses
    check = check_total_queue(accepted, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    assert len(check.duplicated) == pauses  # each paused job ran twice: at-least-once, fenced in the journal
    for job_id in accepted - set(more):
        info = topo.info(job_id)
        assert info.state == "succeeded" and info.attempts == 2, info
        assert len(info.errors) == 1 and info.errors[0].startswith("worker unresponsive"), info.errors
    assert journal_invariants(topo.journal_path) == []


# -- on_crash ----------------------------------------------------------------------------------
async def test_on_crash_fail_ends_the_job_failed_and_reclaim_runs_it_again(topology):
    topo = topology(TASKS, processes=1, concurrency=1, prefetch=0, intensity=10)
    async with Node(topo.config) as node:
        once = await node.queue().enqueue(Job("rec.once"))
        again = await node.queue().enqueue(Job("rec.again"))
        await node.wait_idle(timeout=60)
    once_info, again_info = topo.info(once), topo.info(again)
    assert once_info.state == "failed" and once_info.attempts == 1, once_info
    assert once_info.errors == ["worker died (killed)"]
    assert again_info.state == "succeeded" and again_info.attempts == 2, again_info
    ran = [e.job_id for e in topo.ledger.read()]
    assert ran.count(once) == 1 and ran.count(again) == 2
    assert journal_invariants(topo.journal_path) == []

