"""Task time limits, end to end through real worker processes.

An async task past its timeout is cancelled; a sync task's worker process is
replaced, and the other jobs it held go back to ready with no attempt counted.
The timed-out attempt follows the retry policy with "timed out after N s".
Tests inject short limits (0.2 s) and assert outcomes only, never timings.
"""

from __future__ import annotations

import pytest

from actorq import Job, Node, TaskRegistry
from actorq.jobs.outcome import TaskPolicy
from actorq.testing import eventually, journal_invariants

TASKS = """
@registry.task("to.async_slow", timeout=0.2, retry=RetryPolicy(base=0.0, jitter=0.0))
async def async_slow():
    record()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        record("cancelled")
        raise


@registry.task("to.async_second_try", timeout=0.2, retry=RetryPolicy(base=0.0, jitter=0.0))
async def async_second_try():
    record()
    if current_job().attempt == 1:
        await asyncio.sleep(60)


@registry.task("to.own_timeout", timeout=30, retry=RetryPolicy(base=0.0, jitter=0.0))
async def own_timeout():
    record()
    raise TimeoutError("the task's own")


@registry.task("to.sync_slow", timeout=0.2, retry=RetryPolicy(base=0.0, jitter=0.0))
def sync_slow():
    record()
    time.sleep(60)


@registry.task("to.async_unlimited", retry=RetryPolicy(base=0.0, jitter=0.0))
async def async_unlimited(seconds):
    record()
    await asyncio.sleep(seconds)


@registry.task("to.declared_short", timeout=0.2)
async def declared_short():
    record()
    await asyncio.sleep(0.5)  # past the task's limit, within the job's own


@registry.task("to.sync_fast", timeout=30)
def sync_fast():
    record()


@registry.task("to.sync_waits")
def sync_waits(path):
    record()
    while not os.path.exists(path):  # runs until the test says so (after the overrun)
        time.sleep(0.01)
"""


async def test_async_task_past_its_timeout_is_cancelled_and_retried_then_dead(topology):
    topo = topology(TASKS, processes=1)
    job = Job("to.async_slow", [], max_attempts=2)
    async with Node(topo.config) as node:
        await node.queue().enqueue(job)
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0  # an async task is cancelled on the loop
    assert counts == {"default": {"dead": 1}}
    assert topo.info(job.id).errors == ["timed out after 0.2 s"] * 2
    notes = sorted((e.tag.split("/", 2) + [""])[2] for e in topo.ledger.read())
    assert notes == ["", "", "cancelled", "cancelled"]
    assert journal_invariants(topo.journal_path) == []


@pytest.fixture(params=["sqlite", "postgres"])
def journal_choice(request: pytest.FixtureRequest) -> dict[str, str]:
    """The `topology` keywords of each journal: the default SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    from journal_support import PG_URL

    return {"journal_url": PG_URL, "schema": request.getfixturevalue("pg_schema")}


async def test_a_jobs_own_timeout_overrides_its_tasks(topology, journal_choice):
    # carried by the journal (both backends) and the JOBS frame to the worker
    topo = topology(TASKS, processes=1, **journal_choice)
    limited = Job("to.async_unlimited", [60], max_attempts=1, timeout=0.2)
    free = Job("to.async_unlimited", [0], max_attempts=1)
    widened = Job("to.declared_short", [], max_attempts=1, timeout=30)  # the task says 0.2
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([limited, free])
        with topo.client() as client:
            client.enqueue(widened)
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"dead": 1, "succeeded": 2}}
    assert topo.info(limited.id).errors == ["timed out after 0.2 s"]
    assert topo.info(widened.id).errors == []


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "5"])
def test_g_a_jobs_bad_timeout_is_refused_where_it_is_made(bad):
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        Job("to.sync_fast", timeout=bad).to_new_job()


async def test_timed_out_attempt_follows_retry_policy(topology):
    topo = topology(TASKS, processes=1)
    job = Job("to.async_second_try", [], max_attempts=3)
    async with Node(topo.config) as node:
        await node.queue().enqueue(job)
        counts = await node.wait_idle(timeout=30)
    assert counts == {"default": {"succeeded": 1}}
    assert topo.info(job.id).errors == ["timed out after 0.2 s"]


async def test_a_tasks_own_timeouterror_is_a_raise_not_a_timeout(topology):
    topo = topology(TASKS, processes=1)
    job = Job("to.own_timeout", [], max_attempts=1)
    async with Node(topo.config) as node:
        await node.queue().enqueue(job)
        counts = await node.wait_idle(timeout=30)
    assert counts == {"default": {"dead": 1}}
    assert topo.info(job.id).errors == ["TimeoutError: the task's own"]


async def test_sync_task_overrun_replaces_its_worker_and_others_keep_their_attempt(topology, tmp_path):
    topo = topology(TASKS, processes=1, concurrency=4, intensity=10)
    release = tmp_path / "go"
    bystander = Job("to.sync_waits", [str(release)], max_attempts=1)
    slow = Job("to.sync_slow", [], max_attempts=1)
    async with Node(topo.config) as node:
        first_pids = set(node.worker_pids())
        queue = node.queue()
        await queue.enqueue(bystander)
        await eventually(lambda: len(topo.ledger.read()) == 1, message="the bystander never started")
        await queue.enqueue(slow)
        # the overrun replaces the process: the bystander, killed with it, is given back
        # (max_attempts=1: a counted attempt would make it dead) and runs again in the new one
        await eventually(lambda: topo.states().get(slow.id) == "dead", message="the slow job never timed out")
        await eventually(lambda: set(node.worker_pids()) - first_pids, message="the worker was not replaced")
        release.write_text("go")
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts >= 1
    assert counts == {"default": {"dead": 1, "succeeded": 1}}
    assert topo.info(slow.id).errors == ["timed out after 0.2 s"]
    assert topo.info(bystander.id).errors == []
    ran = [e for e in topo.ledger.read() if e.job_id == bystander.id]
    assert [e.attempt for e in ran] == [1, 1]  # run twice, the first attempt given back
    assert len({e.pid for e in ran}) == 2
    assert journal_invariants(topo.journal_path) == []


async def test_overruns_past_workers_intensity_replace_workers_but_never_restart_the_pool(topology):
    """Each overrun replaces a worker process; with workers.intensity 1 three overruns would
    have restarted the pool. They are requests for a fresh process, not crashes: the pool
    and the rest of the tree are never restarted, and the jobs end dead after their attempts."""
    topo = topology(TASKS, processes=1, concurrency=2, intensity=1)
    jobs = [Job("to.sync_slow", [], max_attempts=2) for _ in range(2)]
    async with Node(topo.config) as node:
        await node.queue().enqueue_many(jobs)
        await eventually(lambda: topo.all_in([j.id for j in jobs], "dead"), timeout=60,
                         message="the overrunning jobs did not end dead")
        tree = await node.tree()
        assert node.progress().worker_restarts >= 3  # four overruns, each replaced its worker
    by_id = {child["id"]: child for child in tree["children"]}
    assert tree["restarts"] == 0 and all(child["restarts"] == 0 for child in by_id.values()), tree
    for job in jobs:
        assert topo.info(job.id).errors == ["timed out after 0.2 s"] * 2
    assert journal_invariants(topo.journal_path) == []


async def test_sync_task_within_its_timeout_succeeds(topology):
    topo = topology(TASKS, processes=1)
    jobs = [Job("to.sync_fast", []) for _ in range(5)]
    async with Node(topo.config) as node:
        await node.queue().enqueue_many(jobs)
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"succeeded": 5}}


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_g_bad_timeout_is_refused_with_its_value(bad):
    registry = TaskRegistry()
    with pytest.raises(ValueError, match=r"task 't': timeout must be a number of seconds > 0"):
        registry.task("t", timeout=bad)
    with pytest.raises(ValueError, match="timeout must be"):
        TaskPolicy(timeout=bad)


def test_timeout_is_part_of_the_declared_policy():
    registry = TaskRegistry()

    @registry.task("t", timeout=1.5)
    def t() -> None: ...

    assert registry["t"].policy.timeout == 1.5
    assert TaskPolicy.from_dict(registry["t"].policy.to_dict()).timeout == 1.5
