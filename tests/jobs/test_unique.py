"""Unique jobs with a period (``unique_for``): the key a producer derives, the bounds it
checks, and the whole path through a real node: its queue refs (`tell`, `enqueue`, `ask`),
and `Client` and `AsyncClient` in another process, through the node's producer endpoint.

The period itself, on both journals and with two connections racing, is in
tests/journal (test_journal_contract.py, test_postgres.py); here every period is an hour, so
no test depends on time passing.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap

import pytest

from actorq import Job, Node, TaskRegistry
from actorq.jobs.outcome import TaskPolicy
from actorq.jobs.task import derived_unique_key
from actorq.journal.protocol import MAX_UNIQUE_FOR, TaskDefaults


pytestmark = pytest.mark.timeout(180)

HOUR = 3600.0

TASKS = """
@registry.task("uq.report", unique_for=3600)
async def report(day, fmt="pdf"):
    record()
    return f"report {day} {fmt}"


@registry.task("uq.plain")
def plain(n):
    record()
    return n
"""


# -- the derived key ----------------------------------------------------------------------------------
def test_the_derived_key_is_the_task_and_its_arguments_whatever_their_spelling() -> None:
    key = derived_unique_key("reports.daily", ["2026-12-01"],
                             {"fmt": "pdf", "to": ["a", "b"], "opts": {"x": 1, "y": 2}})
    assert key.startswith("reports.daily:") and len(key) == len("reports.daily:") + 64
    # keyword order, and tuples or lists, do not matter; every argument and the task name do
    assert key == derived_unique_key("reports.daily", ("2026-12-01",),
                                     {"opts": {"y": 2, "x": 1}, "to": ("a", "b"), "fmt": "pdf"})
    assert key != derived_unique_key("reports.daily", ["2026-12-02"], {"fmt": "pdf", "to": ["a", "b"],
                                                                        "opts": {"x": 1, "y": 2}})
    assert key != derived_unique_key("reports.weekly", ["2026-12-01"], {"fmt": "pdf", "to": ["a", "b"],
                                                                         "opts": {"x": 1, "y": 2}})
    assert derived_unique_key("t", [1], {}) != derived_unique_key("t", [1.0], {})  # msgpack tells them apart
    # a long task name: the key still fits 255 characters, and the digest covers the whole name
    long_a, long_b = "a" * 254 + "1", "a" * 254 + "2"
    assert len(derived_unique_key(long_a, [], {})) == 255
    assert derived_unique_key(long_a, [], {}) != derived_unique_key(long_b, [], {})
    with pytest.raises(TypeError, match="job argument 0"):
        derived_unique_key("t", [object()], {})


def test_a_job_gets_its_period_from_itself_or_its_task_and_a_key_derived_if_it_has_none() -> None:
    declared = TaskPolicy(unique_for=HOUR)
    row = Job("uq.report", ["d1"], id="j1").to_new_job(declared=declared)
    assert (row.unique_key, row.unique_for) == (derived_unique_key("uq.report", ["d1"], {}), HOUR)
    # the job's own values win over the task's
    row = Job("uq.report", ["d1"], unique_key="mine", unique_for=60).to_new_job(declared=declared)
    assert (row.unique_key, row.unique_for) == ("mine", 60.0)
    # a catalog row (what a producer without the registry reads) declares it too
    row = Job("uq.report", ["d1"]).to_new_job(declared=TaskDefaults("uq.report", "default", 0, 20, HOUR))
    assert row.unique_for == HOUR and row.unique_key == derived_unique_key("uq.report", ["d1"], {})
    # no period: a key of its own only, and none made up
    assert Job("t", [1]).to_new_job().unique_key is None
    row = Job("t", [1], unique_key="k").to_new_job(declared=TaskPolicy())
    assert (row.unique_key, row.unique_for) == ("k", None)
    row = Job("t", [1], unique_for=5).to_new_job()  # a period alone: unique by task and arguments
    assert (row.unique_key, row.unique_for) == (derived_unique_key("t", [1], {}), 5.0)


BAD_PERIODS = [0, -1.0, math.inf, math.nan, MAX_UNIQUE_FOR + 1, True, "60"]


@pytest.mark.parametrize("bad", BAD_PERIODS)
def test_a_period_out_of_bounds_is_refused_on_the_job_and_on_the_task(bad: object) -> None:
    expected = f"unique_for must be a number of seconds > 0 and at most {MAX_UNIQUE_FOR:,}, got {bad!r}"
    with pytest.raises(ValueError) as on_job:
        Job("t", unique_for=bad).to_new_job()  # type: ignore[arg-type]
    assert str(on_job.value) == expected
    with pytest.raises(ValueError) as on_task:
        TaskRegistry().task("t", unique_for=bad)  # type: ignore[arg-type]
    assert str(on_task.value) == f"task 't': {expected}"
    assert Job("t", unique_for=MAX_UNIQUE_FOR).to_new_job().unique_for == MAX_UNIQUE_FOR  # the bound itself


def test_the_declared_period_travels_with_the_policy_to_the_node() -> None:
    registry = TaskRegistry()

    @registry.task("t", unique_for=90)
    def t() -> None: ...

    policy = registry.policies()["t"]
    assert policy.unique_for == 90.0
    assert TaskPolicy.from_dict(policy.to_dict()) == policy  # as the worker's task check reports it


# -- through a real node --------------------------------------------------------------------------------
def _client_run(topo, body: str) -> str:  # noqa: ANN001
    """Run `body` in a new Python process with ``client`` open on the journal (a producer in
    another process: through the node's producer endpoint); its stdout."""
    script = ("import asyncio\nfrom actorq import AsyncClient, Client, Job\n"
              f"url = {topo.config.journal.resolved_url!r}\nclient = Client(url)\n"
              + textwrap.dedent(body) + "\nclient.close()\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=topo.dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_period_keeps_the_key_past_the_jobs_end_through_queue_refs_and_clients(topology) -> None:
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        queue = node.queue()  # each task's own queue
        first = Job("uq.report", ["2026-12-01"])
        assert await queue.ask(first, timeout=60) == "report 2026-12-01 pdf"
        assert topo.states()[first.id] == "succeeded"
        # finished, and still inside its hour: the same task and arguments add nothing
        again = Job("uq.report", ["2026-12-01"], {"fmt": "pdf"})  # the default spelled out is other arguments
        other_spelling = Job("uq.report", ("2026-12-01",))
        assert await queue.enqueue(other_spelling) == first.id
        assert await queue.ask(Job("uq.report", ["2026-12-01"]), timeout=30) == "report 2026-12-01 pdf"
        assert queue.tell(Job("uq.report", ["2026-12-01"])) != first.id  # tell cannot know: nothing is added
        assert await queue.ask(again, timeout=60) == "report 2026-12-01 pdf"  # other arguments: a new job
        # a job's own key and period, on a task that declares none
        keyed = Job("uq.plain", [7], unique_key="nightly", unique_for=HOUR)
        assert await queue.ask(keyed, timeout=60) == 7
        assert await queue.enqueue(Job("uq.plain", [8], unique_key="nightly")) == keyed.id

        # producers in another process, through the node: the task's period comes from the
        # journal's task catalog (the client has no registry), the job's own over the wire
        through = node.runtime.producers
        assert through is not None
        before = through.jobs
        out = await asyncio.to_thread(_client_run, topo, """
            print(client.enqueue(Job("uq.report", ["2026-12-01"])))
            fresh = Job("uq.report", ["2026-12-02"])
            print(fresh.id, client.enqueue(fresh), client.enqueue(Job("uq.report", ["2026-12-02"])))
            print(client.enqueue(Job("uq.plain", [9], unique_key="nightly", unique_for=60)))

            async def main():
                async with AsyncClient(url) as aclient:
                    print(await aclient.enqueue(Job("uq.plain", [10], unique_key="nightly")))
                    print(await aclient.enqueue(Job("uq.report", ["2026-12-02"])))
            asyncio.run(main())
        """)
        held, (fresh_id, fresh_answer, fresh_again), keyed_again, async_keyed, async_fresh = [
            line.split() if " " in line else line for line in out.split("\n") if line]
        assert held == first.id
        assert fresh_answer == fresh_again == async_fresh == fresh_id
        assert keyed_again == async_keyed == keyed.id
        assert through.jobs - before == 6, "every enqueue went through the node's producer endpoint"

    # each distinct job ran once; nothing else was ever added
    ran = [entry.job_id for entry in topo.ledger.read()]
    assert sorted(ran) == sorted([first.id, again.id, keyed.id, fresh_id]), ran
    assert len(topo.states()) == 4
