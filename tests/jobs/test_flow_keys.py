"""Ordering keys and concurrency keys end to end: a real node, 2 worker processes, a ledger.

Each task writes a ``start`` and an ``end`` entry to an events ledger. Its appends are
atomic and in one file, so the file's order is the order the events happened in: a
task's start comes after its lease and its end before its ack, so the jobs of a key
that run at once by the ledger are at most those leased at once. Nothing here reads a
clock: the checks are on the order of the entries only.

The ordering test kills workers mid-job (the task SIGKILLs its own process after its
start entry, on the first attempt of chosen jobs): the job is reclaimed and run again
before the next job of its key starts, and every job is counted afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from actorq import Job, Node
from actorq.errors import NotCommitted
from actorq.testing import Ledger, LedgerEntry, check_total_queue, journal_invariants

pytestmark = pytest.mark.timeout(120)

TASKS = """
events = Ledger(str(ledger.path) + ".events")


def mark(what):
    ctx = current_job()
    events.record(ctx.id, ctx.attempt, os.getpid(), what)


@registry.task("flow.tenant", concurrency_limit=3)
async def tenant(n):
    mark("start")
    await asyncio.sleep(0.01)
    mark("end")
    record()


@registry.task("flow.ordered")
async def ordered(key, n, die_at):
    mark("start")
    flag = f"{ledger.path}.died.{current_job().id}"
    if n == die_at and not os.path.exists(flag):  # its first run (a reclaim before it ran counts an attempt)
        open(flag, "w").close()
        die()  # SIGKILL of this worker mid-job: the job and the others it held are reclaimed
    await asyncio.sleep(0.005)
    mark("end")
    record()
"""


def _events(ledger: Ledger) -> list[LedgerEntry]:
    return Ledger(str(ledger.path) + ".events").read()


def _most_at_once(events: list[LedgerEntry], ids: set[str]) -> int:
    """The largest number of `ids` between their start and end entries at one point of the file."""
    running: set[str] = set()
    most = 0
    for entry in events:
        if entry.job_id not in ids:
            continue
        if entry.tag == "start":
            running.add(entry.job_id)
            most = max(most, len(running))
        else:
            running.discard(entry.job_id)
    return most


@pytest.mark.parametrize("journal", ["sqlite", "postgres"])
async def test_never_more_than_the_limit_of_a_concurrency_key_run_at_once(topology, journal, request) -> None:
    extra = {}
    if journal == "postgres":
        extra = {"journal_url": __import__("journal_support").PG_URL, "schema": request.getfixturevalue("pg_schema")}
    # 2 processes x 4 slots + 4 prefetched each: 16 could run at once without the key
    topo = topology(TASKS, processes=2, concurrency=4, prefetch=4, **extra)
    async with Node(topo.config) as node:
        queue = node.queue()
        keyed = [Job("flow.tenant", [n], concurrency_key="tenant-7") for n in range(40)]
        other = [Job("flow.tenant", [n], concurrency_key="tenant-8", concurrency_limit=1) for n in range(10)]
        accepted = set(await queue.enqueue_many(keyed + other))  # type: ignore[arg-type]
        # discard: the key has its limit of admitted jobs (3 of 40 admitted), so nothing is added
        assert await queue.enqueue(Job("flow.tenant", [0], concurrency_key="tenant-7", on_conflict="discard")) is None
        # and an ask of such a job says so, naming the key
        with pytest.raises(NotCommitted, match="was discarded: its concurrency key 'tenant-7'"):
            await queue.ask(Job("flow.tenant", [0], concurrency_key="tenant-7", on_conflict="discard"), timeout=30)
        counts = await node.wait_idle(timeout=60)
        assert node.failure is None
    assert counts == {"default": {"succeeded": 50}}
    events = _events(topo.ledger)
    assert _most_at_once(events, {j.id for j in keyed}) <= 3  # the task's declared limit
    assert _most_at_once(events, {j.id for j in other}) == 1  # the job's own limit wins
    check = check_total_queue(accepted, topo.ledger.read(), {i for i, s in topo.states().items() if s == "succeeded"})
    assert check.valid, check.summary()


async def test_ordering_keys_keep_their_order_across_sigkilled_workers(topology) -> None:
    keys, per_key = 4, 10
    topo = topology(TASKS, processes=2, concurrency=4, prefetch=4, intensity=20)
    jobs: dict[str, list[Job]] = defaultdict(list)
    for n in range(per_key):  # interleaved: the keys' jobs alternate in the queue
        for k in range(keys):
            die_at = 4 if k < 2 else -1  # two keys lose a worker mid-job, on their fifth job
            jobs[f"customer-{k}"].append(Job("flow.ordered", [k, n, die_at], ordering_key=f"customer-{k}"))
    everything = [job for n in range(per_key) for job in (jobs[f"customer-{k}"][n] for k in range(keys))]
    async with Node(topo.config) as node:
        accepted = set(await node.queue().enqueue_many(everything))  # type: ignore[arg-type]
        counts = await node.wait_idle(timeout=90)
        restarts = node.runtime.worker_restarts
        assert node.failure is None
    assert counts == {"default": {"succeeded": keys * per_key}}
    events = _events(topo.ledger)
    for key, key_jobs in jobs.items():
        index = {job.id: n for n, job in enumerate(key_jobs)}
        seen = [(index[e.job_id], e.tag, e.attempt) for e in events if e.job_id in index]
        # every entry of a job comes before any of the next one, and its last entry is its end
        assert [n for n, _, _ in seen] == sorted(n for n, _, _ in seen), (key, seen)
        last = {n: tag for n, tag, _ in seen}
        assert last == {n: "end" for n in range(per_key)}, (key, seen)
    killed = {jobs["customer-0"][4].id, jobs["customer-1"][4].id}
    first_runs = {e.job_id: e.pid for e in reversed(events) if e.tag == "start" and e.job_id in killed}
    assert len(first_runs) == 2 and restarts == len(set(first_runs.values()))  # each death a SIGKILL mid-job
    assert all(sum(1 for e in events if e.job_id == i and e.tag == "start") >= 2 for i in killed)  # ran again
    check = check_total_queue(accepted, topo.ledger.read(), {i for i, s in topo.states().items() if s == "succeeded"})
    print(check.summary())
    assert check.valid, check.summary()
    assert journal_invariants(topo.journal_path) == []


def test_a_jobs_keys_and_its_tasks_declaration_make_the_journal_row() -> None:
    from actorq import TaskRegistry

    registry = TaskRegistry()

    @registry.task("t.render", concurrency_limit=4, on_conflict="discard")
    async def render() -> None: ...

    declared = registry["t.render"].policy
    row = Job("t.render", concurrency_key="tenant-7").to_new_job(declared=declared)
    assert (row.concurrency_key, row.concurrency_limit, row.discard_over_limit) == ("tenant-7", 4, True)
    own = Job("t.render", concurrency_key="k", concurrency_limit=1, on_conflict="block").to_new_job(declared=declared)
    assert (own.concurrency_limit, own.discard_over_limit) == (1, False)  # the job's own settings win
    plain = Job("t.render", ordering_key="customer-42").to_new_job(declared=declared)
    assert (plain.ordering_key, plain.concurrency_key, plain.concurrency_limit) == ("customer-42", None, None)
    for bad, message in [({"concurrency_limit": 0}, "concurrency_limit must be None or an integer from 1"),
                         ({"on_conflict": "drop"}, "on_conflict must be None or one of")]:
        with pytest.raises(ValueError, match=message):
            registry.task(f"t.bad{len(message)}", **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            Job("t.render", concurrency_key="k", **bad).to_new_job()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need a concurrency_key"):
        Job("t.render", concurrency_limit=2).to_new_job()
    with pytest.raises(ValueError, match="a ordering_key may have at most 255 characters"):
        Job("t.render", ordering_key="k" * 256).to_new_job()
