"""Crash recovery that is fenced and exact (ACCEPTANCE C3, C9, C11, C12; on_crash).

Real worker processes, a real SQLite journal, real ZeroMQ sockets. Each test
counts every job in an independent ledger and checks the total queue and the
journal invariants at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

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
async def quick(n, *padding):
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
    await _paused_workers_fenced(topology, pauses=2)  # more pauses: the soak form below


@pytest.mark.soak
async def test_c9_soak_many_pauses_each_fenced(topology):
    await _paused_workers_fenced(topology, pauses=10)


async def _paused_workers_fenced(topology, pauses: int) -> None:  # noqa: ANN001
    """C9: `pauses` times, SIGSTOP the worker running a job past the heartbeat timeout; its job
    runs elsewhere, and its late ack, once resumed, is fenced."""
    topo = topology(TASKS, processes=2, concurrency=1, prefetch=0,
                    heartbeat_interval=0.1, heartbeat_timeout=1.5)
    started = Ledger(str(topo.ledger.path) + ".started")
    accepted: set[str] = set()
    async with Node(topo.config) as node:
        await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="workers up")
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
                assert node.runtime.dispatcher.stats.lost_workers == cycle
            finally:
                os.kill(paused, signal.SIGCONT)
            # resumed: its job finishes there too, and that ack carries the old lease: rejected
            await eventually(lambda: node.runtime.writer.stats.stale_acks >= cycle, timeout=30,
                             message="the resumed worker's late ack was fenced and counted")
            await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30,
                             message="the resumed worker announced itself again")
            assert paused in node.worker_pids(), "a paused worker is not killed, only fenced"
        # the resumed workers take new work
        more = await node.queue().enqueue_many([Job("rec.quick", [i]) for i in range(40)])
        accepted.update(more)
        await node.wait_idle(timeout=60)
        pids_after = {e.pid for e in topo.ledger.read() if e.job_id in set(more)}
        worker_pids = set(node.worker_pids())
        stale = node.runtime.writer.stats.stale_acks
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



# -- C3: the dispatcher dies while workers hold leases ---------------------------------------------
def _restarts(tree: dict, child_id: str) -> int:  # type: ignore[type-arg]
    if tree.get("id") == child_id:
        return int(tree["restarts"])
    return sum(_restarts(child, child_id) for child in tree.get("children", []))


async def test_c3_dispatcher_killed_while_workers_hold_leases(topology, rng):
    topo = topology(TASKS, processes=2, concurrency=4, prefetch=4, heartbeat_interval=0.2)
    kills = 5
    rejoined = 0
    async with Node(topo.config) as node:
        accepted = set(await node.queue().enqueue_many([Job("rec.quick", [i]) for i in range(3000)]))
        await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="workers up")
        workers = set(node.worker_pids())
        for _ in range(kills):
            await eventually(lambda: node.runtime.dispatcher.worker_count == 2 and node.runtime.dispatcher.in_flight > 0,
                             timeout=30, message="both workers registered and holding jobs")
            await asyncio.sleep(rng.uniform(0.02, 0.2))  # fault timing, not a wait for an outcome
            old = node.runtime.dispatcher
            held = old.in_flight
            node.system.exit(node.system.whereis("dispatcher"), "kill")  # in-process: the actor's SIGKILL
            await eventually(lambda: node.runtime.dispatcher is not old and node.runtime.dispatcher.worker_count == 2,
                             timeout=30, message="the workers re-announced to the new dispatcher")
            rejoined += node.runtime.dispatcher.stats.rejoined
            print(f"killed the dispatcher with {held} jobs in flight")
        await node.wait_idle(timeout=120)
        tree = await node.tree()
        assert set(node.worker_pids()) == workers, "no worker was restarted: they re-announced"
        assert node.failure is None
    assert _restarts(tree, "dispatcher") == kills
    assert _restarts(tree, "journal-writer") == 0 and _restarts(tree, "workers") == 0
    assert rejoined == 2 * kills
    check = check_total_queue(accepted, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    assert journal_invariants(topo.journal_path) == []


# -- the journal writer dies: nothing reported accepted that was not committed ---------------------
async def test_writer_killed_mid_enqueue_reports_only_committed_jobs(topology):
    topo = topology(TASKS, processes=1, concurrency=4, prefetch=4, heartbeat_interval=0.2)
    confirmed: set[str] = set()
    refused: list[Job] = []
    async with Node(topo.config) as node:
        queue = node.queue()
        await eventually(lambda: node.runtime.dispatcher is not None and node.runtime.dispatcher.worker_count == 1,
                         timeout=30, message="worker up")
        workers = set(node.worker_pids())
        old_writer = node.runtime.writer

        async def produce(first: int) -> None:
            for i in range(first, first + 400):
                job = Job("rec.quick", [i])
                try:
                    confirmed.add(await queue.enqueue(job))
                except Exception:  # NotCommitted / JournalError: unknown outcome, may re-send (B6)
                    refused.append(job)

        producers = [asyncio.create_task(produce(n * 1000)) for n in range(4)]
        await eventually(lambda: len(confirmed) >= 200, timeout=30, message="enqueues under way")
        node.system.exit(node.system.whereis("journal-writer"), "kill")
        await asyncio.gather(*producers)
        await eventually(lambda: node.runtime.writer is not old_writer and node.runtime.dispatcher.worker_count == 1,
                         timeout=30, message="a new writer, and the worker re-announced")
        present = set(topo.states())
        assert confirmed <= present, f"{len(confirmed - present)} jobs reported accepted are not in the journal"
        for job in refused:  # the same id again: one job, whatever happened to the first try
            confirmed.add(await queue.enqueue(job))
        await node.wait_idle(timeout=120)
        tree = await node.tree()
        assert set(node.worker_pids()) == workers
    print(f"{len(refused)} enqueues were refused while the writer restarted, then re-sent")
    assert _restarts(tree, "journal-writer") == 1
    # rest_for_one: the dispatcher and scheduler used the dead writer, so they restarted with it
    assert _restarts(tree, "dispatcher") == 1 and _restarts(tree, "scheduler") == 1
    assert len(confirmed) == 1600
    check = check_total_queue(confirmed, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    assert journal_invariants(topo.journal_path) == []


async def test_worker_dying_while_no_dispatcher_runs_is_still_reclaimed(topology):
    # the dispatcher is down (killed, its restart not yet run) when a worker dies: the next
    # dispatcher reclaims that worker's jobs at once, not after lease expiry (300 s here)
    topo = topology(TASKS, processes=2, concurrency=2, prefetch=0, heartbeat_interval=0.2, shutdown_timeout=0.5)
    started = Ledger(str(topo.ledger.path) + ".started")
    async with Node(topo.config) as node:
        job_id = await node.queue().enqueue(Job("rec.hold", [3600]))
        victim = await _started_by(started, job_id, 1)
        old = node.runtime.dispatcher
        old.close()  # as a killed dispatcher leaves it, before its supervisor restarts it
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: victim not in node.worker_pids(), timeout=10, message="the death was seen")
        assert node.runtime.orphans, "no dispatcher was there to reclaim"
        node.system.exit(node.system.whereis("dispatcher"), "kill")
        await eventually(lambda: node.runtime.dispatcher is not old, timeout=30, message="dispatcher restarted")
        await eventually(lambda: _started_count(started, job_id) == 2, timeout=60,
                         message="the job ran again after the reclaim")
        info = topo.info(job_id)
        assert info.attempts == 2 and info.errors == ["worker died (killed)"], info
    # the second run sleeps for an hour: the stop kills its worker after shutdown_timeout
    assert journal_invariants(topo.journal_path, allow_pending=True) == []


def _started_count(ledger: Ledger, job_id: str) -> int:
    return sum(1 for e in ledger.read() if e.job_id == job_id)


# -- E9: a reader that never idles does not make the WAL grow without bound ------------------------
NEVER_IDLE_READER = """
import os, sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30, isolation_level=None)
print("reading", flush=True)
while not os.path.exists(sys.argv[2]):
    conn.execute("SELECT count(*) FROM actorq_jobs").fetchone()
"""


async def test_e9_the_node_checkpoints_a_wal_that_readers_never_let_go_of(topology):
    import subprocess
    import sys

    topo = topology(TASKS, processes=1, wal_limit_mb=0.5, poll_interval=0.04)
    stop = topo.dir / "stop-reading"
    async with Node(topo.config) as node:
        reader = subprocess.Popen([sys.executable, "-c", NEVER_IDLE_READER, str(topo.journal_path), str(stop)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
            queue = node.queue()
            for batch in range(8):  # ~3 MB of rows, far past the 0.5 MB limit
                await queue.enqueue_many([Job("rec.quick", [i, "x" * 1000]) for i in range(300)])
            await eventually(lambda: node.runtime.scheduler.maintenance >= 1, timeout=60,
                             message="the node checkpointed the oversized WAL")
            await node.wait_idle(timeout=60)
            wal = topo.journal_path.with_name(topo.journal_path.name + "-wal")
            # bounded: after a checkpoint it starts over instead of holding every row written
            await eventually(lambda: wal.stat().st_size < 3_000_000, timeout=60,
                             message="the WAL shrank below the size of what was written")
        finally:
            stop.touch()
            reader.wait(timeout=30)
