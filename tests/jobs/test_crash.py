"""Process crashes and restarts (ACCEPTANCE section C), with real processes and signals.

Each test counts every job: tasks append to an independent ledger, the test
drains the queue, then applies Jepsen's total-queue check (nothing lost,
nothing unexpected, duplicates counted and printed) and the journal invariants.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from actorq import Job, Node, NodeFailed
from actorq.testing import Ledger, check_total_queue, eventually, job_history, journal_invariants
from node_process import NodeProcess

TASKS = """
started = Ledger(str(ledger.path) + ".started")


@registry.task("crash.work")
async def work(n):
    await asyncio.sleep(0.03)
    record()


@registry.task("crash.selfkill")
async def selfkill():
    record()  # the job ran ...
    if current_job().attempt == 1:
        die()  # ... and its worker dies before the ack leaves


@registry.task("crash.poison", max_attempts=3)
async def poison():
    record()
    die()


@registry.task("crash.poison5", max_attempts=5)
async def poison5():
    record()
    die()


@registry.task("crash.few_ms")
async def few_ms(n):
    await asyncio.sleep(0.004)
    record()


@registry.task("crash.overrun")
async def overrun():
    ctx = current_job()
    started.record(ctx.id, ctx.attempt)
    if os.environ.get("AQTEST_RUN") == "1":
        await asyncio.sleep(3600)  # far past the shutdown timeout; SIGTERM is handled, then SIGKILL
    record()


@registry.task("crash.slow")
async def slow(n):
    ctx = current_job()
    started.record(ctx.id, ctx.attempt)
    await asyncio.sleep(0.3)
    record()
"""

WORKER_DIED_KILLED = "worker died (killed)"
NODE_RESTARTED = "node restarted (lease of an earlier incarnation)"




def _succeeded(states: dict[str, str]) -> set[str]:
    return {job_id for job_id, state in states.items() if state == "succeeded"}


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- C1 ------------------------------------------------------------------------------------
async def test_c1_sigkill_random_worker_under_load(topology, rng):
    await _sigkill_random_workers(topology, rng, kills=3, count=1500)  # more kills: the soak form below


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_c1_soak_many_sigkills_under_load(topology, rng):
    await _sigkill_random_workers(topology, rng, kills=15, count=8000)


async def _sigkill_random_workers(topology, rng, kills: int, count: int) -> None:  # noqa: ANN001
    """C1: SIGKILL a random worker `kills` times while `count` 30 ms jobs run (8 slots: about
    `count` / 270 seconds of work, room for a kill and a restart each second or so)."""
    topo = topology(TASKS, processes=2, concurrency=4, prefetch=4, intensity=kills + 15)
    async with Node(topo.config) as node:
        jobs = [Job("crash.work", [i]) for i in range(count)]
        accepted = set(await node.queue().enqueue_many(jobs))
        killed: list[int] = []
        for _ in range(kills):
            await eventually(
                lambda: len(node.worker_pids()) == 2 and node.runtime.dispatcher.worker_count == 2
                and node.runtime.dispatcher.in_flight > 0,
                timeout=30, message="both workers up and jobs in flight",
            )
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # fault timing, not a wait for an outcome
            victim = rng.choice(node.worker_pids())
            assert psutil.Process(victim).ppid() == os.getpid()  # a worker of this node
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            await eventually(lambda: victim not in node.worker_pids(), timeout=10, message=f"pool saw {victim} die")
        counts = await node.wait_idle(timeout=90)  # lease_timeout is 300 s: only crash-driven reclaim fits
        restarts = node.runtime.worker_restarts
        reclaimed = node.runtime.dispatcher.stats.reclaimed
        reclaim_events = node.runtime.dispatcher.stats.reclaim_events  # one reclaim per death, at once
        survivors = node.worker_pids()
        assert node.failure is None
    print(f"killed workers {killed}; {reclaimed} leased jobs reclaimed on those deaths")

    assert counts == {"default": {"succeeded": count}}
    assert restarts == kills == reclaim_events and len(survivors) == 2 and not set(killed) & set(survivors)
    assert reclaimed > 0, "killed workers held leased jobs; they must come back through reclaim"
    check = check_total_queue(accepted, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    for job_id, (state, attempts, errors) in job_history(topo.journal_path).items():
        # each crash is one counted attempt, recorded with its reason; the last attempt succeeded
        assert state == "succeeded" and attempts == len(errors) + 1, (job_id, state, attempts, errors)
        assert all(error == WORKER_DIED_KILLED for error in errors), errors
    assert journal_invariants(topo.journal_path) == []


# -- C2, C7 ----------------------------------------------------------------------------------
async def test_c2_sigkill_after_the_job_ran_before_its_ack(topology):
    # 4 slots, no prefetch: the first job to run kills its worker; the others it held are
    # reclaimed unrun (their attempt counted), so about 50 / 4 workers die, not 50.
    topo = topology(TASKS, processes=2, concurrency=4, prefetch=0, intensity=100)
    async with Node(topo.config) as node:
        accepted = set(await node.queue().enqueue_many([Job("crash.selfkill") for _ in range(50)]))
        counts = await node.wait_idle(timeout=90)
        # the last job's worker may still be restarting when the queue is idle: the pool comes back
        await eventually(lambda: len(node.worker_pids()) == 2, timeout=30, message="pool back to 2 workers")
        restarts = node.runtime.worker_restarts
        assert node.failure is None
    print(f"{restarts} worker restarts")
    assert counts == {"default": {"succeeded": 50}}

    entries = topo.ledger.read()
    check = check_total_queue(accepted, entries, _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    killed_after_running = {e.job_id for e in entries if e.attempt == 1}
    assert killed_after_running and restarts >= len(killed_after_running)
    assert set(check.duplicated) == killed_after_running  # ran, died unacked, ran again
    jobs = job_history(topo.journal_path)
    for job_id in accepted:
        state, attempts, errors = jobs[job_id]
        # one success in the journal, after one (or more) crashed attempts
        assert state == "succeeded" and attempts >= 2 and attempts == len(errors) + 1, jobs[job_id]
        assert set(errors) == {WORKER_DIED_KILLED}
        runs = sorted(e.attempt for e in entries if e.job_id == job_id)
        assert runs[-1] == attempts and len(set(runs)) == len(runs), runs
    assert journal_invariants(topo.journal_path) == []


async def test_c7_poison_pill_goes_dead_and_the_node_survives(topology):
    topo = topology(TASKS, processes=2, concurrency=1, prefetch=0, intensity=5, period=60.0)
    poison = Job("crash.poison", max_attempts=3)
    after = Job("crash.work", [1])
    async with Node(topo.config) as node:
        await node.queue().enqueue(poison)
        await eventually(lambda: topo.states()[poison.id] == "dead", timeout=60, message="the poison pill is dead")
        await node.queue().enqueue(after)  # the pool is still up and running jobs
        await node.wait_idle(timeout=30)
        restarts = node.runtime.worker_restarts
        assert node.failure is None and len(node.worker_pids()) == 2
    assert restarts == 3

    info = topo.info(poison.id)
    assert (info.state, info.attempts) == ("dead", 3)
    assert info.errors == [WORKER_DIED_KILLED] * 3
    runs = [e for e in topo.ledger.read() if e.job_id == poison.id]
    assert [e.attempt for e in runs] == [1, 2, 3] and len({e.pid for e in runs}) == 3  # 3 workers died
    assert topo.states()[after.id] == "succeeded"
    assert journal_invariants(topo.journal_path) == []


async def test_c7_poison_pill_beyond_intensity_escalates(topology):
    # Pool intensity 2: its third worker death inside the period makes the pool give up
    # (it stops its other workers and exits); the root restarts the pool, up to its own
    # intensity (2 by default); the third pool failure makes the root give up and the node
    # stop with that reason: OTP escalation, never an endless restart loop. 3 x 3 deaths.
    # One worker process: with two, the sibling could pick the job up and die with it while
    # the pool is giving up, a fourth death in that incarnation.
    topo = topology(TASKS, processes=1, concurrency=1, prefetch=0, intensity=2, period=60.0)
    poison = Job("crash.poison", max_attempts=20)
    node = Node(topo.config)
    await node.start()
    try:
        await node.queue().enqueue(poison)
        with pytest.raises(NodeFailed, match="reached_max_restart_intensity"):
            await asyncio.wait_for(node.wait(), timeout=90)
    finally:
        await node.stop()
    assert node.worker_pids() == []
    info = topo.info(poison.id)
    assert (info.state, info.attempts, info.errors) == ("ready", 9, [WORKER_DIED_KILLED] * 9)
    assert journal_invariants(topo.journal_path, allow_pending=True) == []


# -- restarts of a real `actorq run` (C6, C10, A29) -------------------------------------------------
def _endpoint_in(directory: Path) -> str:
    """An ipc:// endpoint inside the test's directory: a SIGKILLed node leaves its socket file
    there, not a private directory in /tmp (and the next run must bind over the stale file)."""
    path = directory / "dispatcher.ipc"
    return f"ipc://{path}" if len(str(path)) < 100 else ""  # sun_path holds ~107 bytes


@pytest.mark.parametrize("stop", ["sigterm", "sigkill_node", "sigkill_group"])
async def test_c6_c10_node_stopped_mid_queue_then_restarted(topology, tmp_path, stop):
    topo = topology(TASKS, processes=2, concurrency=8, prefetch=8, shutdown_timeout=20.0, log_level="warning",
                    endpoint=_endpoint_in(tmp_path))
    with topo.client() as client:
        accepted = set(client.enqueue_many([Job("crash.few_ms", [i]) for i in range(1000)]))
        first = NodeProcess(topo, 1)
        try:
            for batch in range(10):  # a second producer while the node runs
                more = [Job("crash.few_ms", [1000 + 100 * batch + i]) for i in range(100)]
                accepted |= set(client.enqueue_many(more))
            await eventually(lambda: topo.ledger.count() >= 600, timeout=60, message="600 jobs ran in run 1")
            workers = first.children()
            assert len(workers) == 2, workers
            if stop == "sigterm":
                os.kill(first.pid, signal.SIGTERM)
            elif stop == "sigkill_node":  # only the node: its workers must notice and die (A29)
                os.kill(first.pid, signal.SIGKILL)
            else:
                os.killpg(first.pid, signal.SIGKILL)
            code = await first.exit_code(timeout=60)
        except BaseException:
            first.kill_everything()
            raise
    print(f"run 1 ({stop}) exited with {code}; output:\n{first.output()[-2000:]}")
    await eventually(lambda: all(_gone(w) for w in workers), timeout=10,
                     message=f"no worker of the old run is left: {[w.pid for w in workers]}")
    ran_in_first = topo.ledger.read()
    assert len({e.job_id for e in ran_in_first}) < len(accepted), "the node must be stopped mid-queue"
    if stop == "sigterm":
        assert code == 0, first.output()
        # a graceful stop leaves no lease behind: running jobs finished, unstarted ones went back
        assert journal_invariants(topo.journal_path, allow_pending=True) == []
    else:
        assert code == -signal.SIGKILL
        problems = journal_invariants(topo.journal_path, allow_pending=True)
        assert [p for p in problems if not p.startswith("job leased at rest")] == []

    second = await NodeProcess.burst(topo, 2)
    assert second.proc.returncode == 0, second.output()

    entries = topo.ledger.read()
    check = check_total_queue(accepted, entries, _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    assert journal_invariants(topo.journal_path) == []
    assert {e.tag.split("/")[0] for e in entries} == {"1", "2"}  # both runs did work
    assert [e for e in entries if e.tag.startswith("1/")] == ran_in_first, "no orphan of run 1 ran a job"
    errors = [error for _, _, errs in job_history(topo.journal_path).values() for error in errs]
    if stop == "sigterm":
        assert errors == [] and not check.duplicated, "a graceful stop must neither crash nor repeat a job"
    else:
        assert errors and set(errors) == {NODE_RESTARTED}  # the old run's leases, reclaimed at start


async def test_c10_sigterm_with_jobs_in_flight_exits_0_and_loses_nothing(topology):
    topo = topology(TASKS, processes=2, concurrency=2, prefetch=2, shutdown_timeout=20.0)
    started = Ledger(str(topo.ledger.path) + ".started")
    with topo.client() as client:
        accepted = set(client.enqueue_many([Job("crash.slow", [i]) for i in range(20)]))
    node = NodeProcess(topo, 1)
    try:
        def in_flight() -> set[str]:
            return {e.job_id for e in started.read()} - {e.job_id for e in topo.ledger.read()}

        running = await eventually(lambda: len(in_flight()) >= 2 and in_flight(), timeout=30,
                                   message="jobs in flight")
        os.kill(node.pid, signal.SIGTERM)
        code = await node.exit_code(timeout=60)
    except BaseException:
        node.kill_everything()
        raise
    assert code == 0, node.output()
    finished = {e.job_id for e in topo.ledger.read()}
    assert running <= finished, "jobs in flight at SIGTERM must finish before the node exits"
    assert {e.job_id for e in started.read()} == finished  # nothing was started and dropped
    assert journal_invariants(topo.journal_path, allow_pending=True) == []
    jobs = job_history(topo.journal_path)
    assert {j for j, (state, _, _) in jobs.items() if state == "succeeded"} == finished
    for job_id, (state, attempts, errors) in jobs.items():
        assert errors == [] and attempts == (1 if state == "succeeded" else 0), (job_id, jobs[job_id])

    second = await NodeProcess.burst(topo, 2)
    assert second.proc.returncode == 0, second.output()
    check = check_total_queue(accepted, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid and not check.duplicated, check.summary()
    assert journal_invariants(topo.journal_path) == []


async def test_c10_stop_while_workers_are_starting_is_graceful(topology):
    # Workers still starting when the node stops are stopped, not left running until
    # shutdown_timeout runs out and they are killed.
    topo = topology(TASKS, processes=2, shutdown_timeout=60.0)
    node = Node(topo.config)
    await node.start()
    await node.stop()  # the workers are still importing: none has said hello yet
    assert len(node.runtime.worker_exits) == 2, node.runtime.worker_exits
    assert all(reason in ("shutdown", "normal") for _, reason in node.runtime.worker_exits), node.runtime.worker_exits
    assert node.worker_pids() == []


# -- C11, C12 ----------------------------------------------------------------------------------
async def test_c11_job_overrunning_the_shutdown_timeout_is_killed_and_reclaimed(topology):
    topo = topology(TASKS, processes=1, concurrency=2, prefetch=0, shutdown_timeout=1.0)
    started = Ledger(str(topo.ledger.path) + ".started")
    with topo.client() as client:
        accepted = set(client.enqueue_many([Job("crash.overrun"), Job("crash.few_ms", [1])]))
    node = NodeProcess(topo, 1)
    try:
        await eventually(lambda: started.count() == 1 and topo.ledger.count() == 1, timeout=30,
                         message="the short job done, the long one running")
        os.kill(node.pid, signal.SIGTERM)
        code = await node.exit_code(timeout=60)
    except BaseException:
        node.kill_everything()
        raise
    assert code == 0, node.output()  # the overrun is the job's problem, not a node failure
    (overrun,) = [j for j in accepted if j not in {e.job_id for e in topo.ledger.read()}]
    info = topo.info(overrun)
    # reclaimed at once by the crash of its worker, not left leased until lease expiry
    assert info.state == "ready" and info.attempts == 1 and info.errors == [WORKER_DIED_KILLED], info
    assert journal_invariants(topo.journal_path, allow_pending=True) == []

    second = await NodeProcess.burst(topo, 2)
    assert second.proc.returncode == 0, second.output()
    check = check_total_queue(accepted, topo.ledger.read(), _succeeded(topo.states()))
    print(check.summary())
    assert check.valid, check.summary()
    assert journal_invariants(topo.journal_path) == []


async def test_c12_sigterm_five_times_and_sigint_make_one_clean_shutdown(topology):
    topo = topology(TASKS, processes=2, concurrency=2, prefetch=2, shutdown_timeout=20.0)
    started = Ledger(str(topo.ledger.path) + ".started")
    with topo.client() as client:
        accepted = set(client.enqueue_many([Job("crash.slow", [i]) for i in range(20)]))
    node = NodeProcess(topo, 1)
    try:
        await eventually(lambda: started.count() >= 2, timeout=30, message="jobs in flight")
        for _ in range(5):
            os.kill(node.pid, signal.SIGTERM)
        os.kill(node.pid, signal.SIGINT)
        code = await node.exit_code(timeout=60)
    except BaseException:
        node.kill_everything()
        raise
    output = node.output()
    assert code == 0, output
    assert output.count("stop requested") == 1, output
    assert "Traceback" not in output, output
    finished = {e.job_id for e in topo.ledger.read()}
    assert {e.job_id for e in started.read()} == finished  # every started job finished
    assert journal_invariants(topo.journal_path, allow_pending=True) == []
    jobs = job_history(topo.journal_path)
    assert all(errors == [] for _, _, errors in jobs.values()), jobs
    assert len(finished) < len(accepted)


async def test_c13_task_module_broken_while_running_escalates_and_names_it(topology):
    # The start-time check passed; then the module breaks on disk and a worker dies. Its
    # replacements fail to import: the pool restarts them until its intensity is spent,
    # the root restarts the pool until its own is spent, and `actorq run` exits 1.
    topo = topology(TASKS, processes=1, concurrency=1, prefetch=0, intensity=2, period=60.0)
    node = NodeProcess(topo, 1)
    try:
        await eventually(lambda: topo.config.node_file.exists() and len(node.children()) == 1, timeout=30,
                         message="the node and its worker started")
        (topo.dir / f"{topo.tasks_module}.py").write_text("raise RuntimeError('broken on disk')\n")
        for stale in topo.dir.glob("__pycache__/*"):
            stale.unlink()
        os.kill(node.children()[0].pid, signal.SIGKILL)
        code = await node.exit_code(timeout=90)
    except BaseException:
        node.kill_everything()
        raise
    output = node.output()
    assert code == 1, output
    assert f"cannot import task module {topo.tasks_module!r}" in output and "broken on disk" in output
    assert "reached_max_restart_intensity" in output, output
