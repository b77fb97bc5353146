"""End to end through real worker processes: enqueue -> run -> succeeded.

Every effect is checked in the independent ledger the tasks write (see
tests/conftest.py), and every outcome in the real SQLite journal.
"""

from __future__ import annotations

import datetime
import os

import pytest

from actorq import Job, Node, current_job
from actorq.testing import check_total_queue, eventually, journal_invariants

TASKS = """
@registry.task("e2e.async_add")
async def async_add(a, b):
    await asyncio.sleep(0.001)
    record(f"sum={a + b}")


@registry.task("e2e.sync_add")
def sync_add(a, b):
    time.sleep(0.001)
    record(f"sum={a + b}")


@registry.task("e2e.flaky", retry=RetryPolicy(base=0.2, factor=2.0, jitter=0.0))
async def flaky(fail_times):
    record()
    attempt = current_job().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure on attempt {attempt}")


@registry.task("e2e.give_up")
def give_up():
    record()
    raise Discard("not worth retrying")


@registry.task("e2e.exits", retry=RetryPolicy(base=0.0, jitter=0.0))
def exits():
    record()
    sys.exit(3)


@registry.task("e2e.interrupted", retry=RetryPolicy(base=0.0, jitter=0.0))
async def interrupted():
    record()
    raise KeyboardInterrupt("from inside a task")


@registry.task("e2e.whoami")
async def whoami():
    ctx = current_job()
    record(f"{ctx.task}|{ctx.queue}|{ctx.max_attempts}|async")


@registry.task("e2e.whoami_sync")
def whoami_sync():
    ctx = current_job()
    record(f"{ctx.task}|{ctx.queue}|{ctx.max_attempts}|sync")
"""


def _note(tag: str) -> str:
    """The note a task passed to ``record(note)``: the tag is ``run/incarnation/note``."""
    return tag.split("/", 2)[2]


async def test_end_to_end_async_and_sync_tasks(topology):
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        worker_pids = set(node.worker_pids())
        queue = node.queue("default")
        confirmed = [Job("e2e.async_add", [i, 1]) for i in range(100)]
        confirmed += [Job("e2e.sync_add", [i, 2]) for i in range(100)]
        accepted = set(await queue.enqueue_many(confirmed))
        told = [Job("e2e.async_add", [i, 3]) for i in range(50)]
        told_ids = {queue.tell(job) for job in told}
        with topo.client() as client:  # another producer, straight into the journal
            external = [Job("e2e.sync_add", [i, 4]) for i in range(50)]
            accepted |= set(client.enqueue_many(external))
        counts = await node.wait_idle(timeout=60)
        assert set(node.worker_pids()) == worker_pids, "no worker should have restarted"
    accepted |= told_ids  # a told job is accepted once its group committed; it has by now

    assert counts == {"default": {"succeeded": 300}}
    entries = topo.ledger.read()
    check = check_total_queue(accepted, entries, {i for i, s in topo.states().items() if s == "succeeded"})
    print(check.summary())
    assert check.valid, check.summary()
    assert not check.duplicated, "a clean run must not run any job twice"
    expected = {job.id: f"sum={job.args[0] + job.args[1]}" for job in confirmed + told + external}
    assert {e.job_id: _note(e.tag) for e in entries} == expected
    assert {e.pid for e in entries} <= worker_pids  # ran in the worker processes, not here
    assert os.getpid() not in {e.pid for e in entries}
    assert {e.attempt for e in entries} == {1}
    assert journal_invariants(topo.journal_path) == []


async def test_a_task_raising_systemexit_or_keyboardinterrupt_fails_its_attempt(topology):
    # BaseExceptions from task code are failed attempts, never successes, and the worker survives
    topo = topology(TASKS, processes=1)
    jobs = [Job("e2e.exits", [], max_attempts=2), Job("e2e.interrupted", [], max_attempts=2)]
    async with Node(topo.config) as node:
        await node.queue().enqueue_many(jobs)
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"dead": 2}}
    assert topo.info(jobs[0].id).errors == ["SystemExit: 3", "SystemExit: 3"]
    assert topo.info(jobs[1].id).errors == ["KeyboardInterrupt: from inside a task"] * 2
    assert sorted(e.attempt for e in topo.ledger.read()) == [1, 1, 2, 2]


async def test_b12_failing_task_retried_with_backoff_then_succeeds(topology):
    topo = topology(TASKS)
    recovers = Job("e2e.flaky", [2], max_attempts=5)
    exhausted = Job("e2e.flaky", [99], max_attempts=2)
    discarded = Job("e2e.give_up", [])
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([recovers, exhausted, discarded])
        counts = await node.wait_idle(timeout=30)
    assert counts == {"default": {"succeeded": 1, "dead": 1, "failed": 1}}

    info = topo.info(recovers.id)
    assert (info.state, info.attempts) == ("succeeded", 3)
    assert info.errors == ["RuntimeError: flaky failure on attempt 1", "RuntimeError: flaky failure on attempt 2"]
    runs = sorted((e for e in topo.ledger.read() if e.job_id == recovers.id), key=lambda e: e.attempt)
    assert [e.attempt for e in runs] == [1, 2, 3]
    # The policy (base 0.2 s, factor 2, no jitter) is a lower bound: a retry never runs early.
    waits = [later.at - earlier.at for earlier, later in zip(runs, runs[1:])]
    assert waits[0] >= 0.2 - 0.01 and waits[1] >= 0.4 - 0.01, waits

    info = topo.info(exhausted.id)
    assert (info.state, info.attempts, len(info.errors)) == ("dead", 2, 2)
    info = topo.info(discarded.id)
    assert (info.state, info.attempts) == ("failed", 1)
    assert info.errors == ["Discard: not worth retrying"]
    assert journal_invariants(topo.journal_path) == []


async def test_g6_unknown_task_goes_dead_with_reason(topology, tmp_path):
    topo = topology(TASKS)
    marker = tmp_path / "pwned"
    evil = Job("os.system", [f"touch {marker}"])
    typo = Job("e2e.async_ad", [1, 2])
    valid = Job("e2e.async_add", [1, 2])
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([evil, typo])
        await node.wait_idle(timeout=30)
        failed = node.runtime.dispatcher.stats.failed
        await node.queue().enqueue(valid)  # the node and its workers carry on
        await node.wait_idle(timeout=30)
    assert failed == 2  # counted
    for job in (evil, typo):
        info = topo.info(job.id)
        assert (info.state, info.attempts) == ("dead", 1)
        assert len(info.errors) == 1 and info.errors[0].startswith(f"unknown task {job.task!r}")
    assert not marker.exists(), "a task name from the journal must never be imported or run"
    assert topo.states()[valid.id] == "succeeded"
    assert [e.job_id for e in topo.ledger.read()] == [valid.id]
    assert journal_invariants(topo.journal_path) == []


async def test_g7_unencodable_args_raise_type_error_at_tell(topology):
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        queue = node.queue()
        with pytest.raises(TypeError, match=r"argument 1 \(object\)"):
            queue.tell(Job("e2e.async_add", [1, object()]))
        with pytest.raises(TypeError, match=r"argument 'when' \(datetime\)"):
            queue.tell(Job("e2e.async_add", [1], {"when": datetime.datetime.now()}))
        with pytest.raises(TypeError, match=r"argument 0 \(int\)"):
            queue.tell(Job("e2e.async_add", [2**70, 1]))
        with pytest.raises(TypeError, match=r"argument 0 \(set\)"):
            await queue.enqueue(Job("e2e.async_add", [{1}, 2]))
        with topo.client() as client, pytest.raises(TypeError, match=r"argument 1 \(object\)"):
            client.enqueue(Job("e2e.async_add", [1, object()]))
        assert await node.counts() == {}, "nothing may reach the journal"
        assert node.runtime.dispatcher.stats.failed == 0
    assert topo.ledger.read() == []


@pytest.mark.parametrize("args, kwargs", [([], {1: 2}), ([{1: "a"}], {})], ids=["kwargs-key", "nested-key"])
async def test_g7_non_string_map_keys_raise_type_error_at_tell(topology, args, kwargs):
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        with pytest.raises(TypeError):
            node.queue().tell(Job("e2e.async_add", args, kwargs))
        assert await node.counts() == {}, "nothing may reach the journal"


async def test_current_job_gives_id_attempt_task_and_queue(topology):
    topo = topology(TASKS, queues=("default", "other"))
    with pytest.raises(LookupError):
        current_job()  # outside a task
    sent = [(Job("e2e.whoami", max_attempts=7), "default"), (Job("e2e.whoami_sync", max_attempts=3), "default"),
            (Job("e2e.whoami", max_attempts=4), "other"), (Job("e2e.whoami_sync", max_attempts=2), "other")]
    expected = {}
    async with Node(topo.config) as node:
        for job, queue in sent:
            await node.queue(queue).enqueue(job)
            kind = "sync" if job.task.endswith("_sync") else "async"
            expected[job.id] = f"{job.task}|{queue}|{job.max_attempts}|{kind}"
        await eventually(lambda: topo.ledger.count() >= len(expected), timeout=30, message="4 jobs ran")
        await node.wait_idle(timeout=30)
    entries = topo.ledger.read()
    assert {e.job_id: (e.attempt, _note(e.tag)) for e in entries} == {i: (1, n) for i, n in expected.items()}


async def test_b7_unique_keys_through_a_queue_ref_and_a_client(topology):
    topo = topology(TASKS, processes=1)
    with topo.client() as client:  # before the node runs: the first job holds the key
        first = Job("e2e.async_add", [1, 2], unique_key="sum:1+2")
        assert client.enqueue(first) == first.id
        again = Job("e2e.async_add", [1, 2], unique_key="sum:1+2")
        assert client.enqueue(again) == first.id  # "conflict": the holder's id, nothing added
    async with Node(topo.config) as node:
        queue = node.queue()
        third = Job("e2e.async_add", [1, 2], unique_key="sum:1+2")
        assert await queue.enqueue(third) in (first.id, third.id)  # the first may have finished meanwhile
        await node.wait_idle(timeout=30)
        fresh = Job("e2e.async_add", [1, 2], unique_key="sum:1+2")
        assert await queue.enqueue(fresh) == fresh.id  # the holder is final: the key is free
        both = await queue.enqueue_many([Job("e2e.async_add", [5, 5], unique_key="k"),
                                         Job("e2e.async_add", [5, 5], unique_key="k")])
        assert both[0] == both[1]  # one insert; the other learns its id
        await node.wait_idle(timeout=30)
    states = topo.states()
    assert again.id not in states and states[first.id] == "succeeded"


async def test_a_job_told_to_an_idle_node_is_inserted_and_leased_in_one_group(topology, monkeypatch):
    """`tell` on the node's loop wakes the workers idle for its queue in the same turn: the
    lease lands in the insert's group, so the job reaches a worker after one commit, not two."""
    from actorq.jobs import journal_writer as jw

    groups: list[tuple[set[str], bool]] = []  # (ids inserted, a lease ran) of each committed group
    commit = jw.JournalWriter._commit

    def recording(self, ops):
        group = commit(self, ops)
        groups.append(({op[1].id for op in ops if op[0] == jw.ENQUEUE}, any(op[0] == jw.LEASE for op in ops)))
        return group

    monkeypatch.setattr(jw.JournalWriter, "_commit", recording)
    async with Node(topology(TASKS).config) as node:
        runtime = node._runtime()
        queue = node.queue("default")
        for i in range(3):
            # idle: the workers' last leases found the queue empty
            await eventually(lambda: "default" in runtime.dispatcher._empty
                             and not any(w.leasing for w in runtime.dispatcher._workers.values()))
            job_id = queue.tell(Job("e2e.async_add", [i, 1]))

            async def done(n: int = i + 1) -> bool:
                return (await node.counts()).get("default", {}).get("succeeded", 0) == n

            await eventually(done, timeout=30)
            inserted_in = [leased for ids, leased in groups if job_id in ids]
            assert inserted_in == [True], groups
