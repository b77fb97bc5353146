"""Pausing a queue, end to end through real worker processes, on both journals.

A paused queue leases nothing on any node (the pause lives in the journal);
jobs already running finish; enqueueing into it still works; after resume its
jobs run. "Leases nothing" is observed against a signal, never a sleep: a job
of another queue enqueued after the paused ones has run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from actorq import Job, Node
from actorq.node.constants import EXIT_CONFIG, EXIT_OK
from actorq.testing import eventually, journal_invariants
from cli_support import actorq_main

TASKS = """
@registry.task("pz.work")
async def work():
    record()


@registry.task("pz.waits")
def waits(path):
    record()
    while not os.path.exists(path):  # runs until the test lets it finish
        time.sleep(0.01)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def journal_choice(request: pytest.FixtureRequest) -> dict[str, str]:
    """The `topology` keywords of each journal: the default SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    from journal_support import PG_URL

    return {"journal_url": PG_URL, "schema": request.getfixturevalue("pg_schema")}


def _ready(topo, ids) -> bool:
    states = topo.states()
    return all(states.get(i) == "ready" for i in ids)


async def test_a_paused_queue_leases_nothing_running_jobs_finish_and_resume_runs_the_rest(
        topology, journal_choice, tmp_path):
    topo = topology(TASKS, processes=1, queues=("default", "other"), **journal_choice)
    release = tmp_path / "go"
    running = Job("pz.waits", [str(release)])
    async with Node(topo.config) as node:
        queue = node.queue("default")
        await queue.enqueue(running)
        await eventually(lambda: len(topo.ledger.read()) == 1, message="the long job never started")
        assert await node.pause_queue("default") is True
        assert await node.pause_queue("default") is False
        assert await node.paused_queues() == ["default"]
        held = [Job("pz.work") for _ in range(5)]
        await queue.enqueue_many(held)  # enqueueing into a paused queue works
        marker = Job("pz.work")
        await node.queue("other").enqueue(marker)
        await eventually(lambda: topo.states().get(marker.id) == "succeeded", message="the other queue ran")
        assert _ready(topo, [j.id for j in held]), topo.states()
        release.write_text("go")  # the job running when the queue was paused finishes
        await eventually(lambda: topo.states().get(running.id) == "succeeded", message="the running job finished")
        assert _ready(topo, [j.id for j in held]), topo.states()
        assert await node.resume_queue("default") is True
        assert await node.resume_queue("default") is False
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"succeeded": 6}, "other": {"succeeded": 1}}
    if not journal_choice:
        assert journal_invariants(topo.journal_path) == []


async def test_a_pause_from_another_client_reaches_the_node_and_outlives_it(topology, journal_choice):
    # the pause is in the journal: a producer's Client pauses, the running node obeys, a restart keeps it
    topo = topology(TASKS, processes=1, queues=("default", "other"), **journal_choice)
    with topo.client() as client:
        assert client.pause_queue("default") is True
    held = [Job("pz.work") for _ in range(3)]
    async with Node(topo.config) as node:
        await node.queue("default").enqueue_many(held)
        marker = Job("pz.work")
        await node.queue("other").enqueue(marker)
        await eventually(lambda: topo.states().get(marker.id) == "succeeded", message="the other queue ran")
        assert _ready(topo, [j.id for j in held]), topo.states()
        with topo.client() as client:
            assert client.paused_queues() == ["default"]
            assert client.resume_queue("default") is True  # the node sees it at its next poll
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"succeeded": 3}, "other": {"succeeded": 1}}


async def test_g_a_bad_queue_name_is_refused_by_the_api(topology):
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        for bad in ("", "x" * 256, 7):
            with pytest.raises(ValueError, match="queue name"):
                await node.pause_queue(bad)  # type: ignore[arg-type]
    with topo.client() as client, pytest.raises(ValueError, match="queue name"):
        client.resume_queue("")


# -- the command line ------------------------------------------------------------------------


def _cli(topo, *args: str) -> subprocess.CompletedProcess[str]:
    """``actorq *args`` through its ``main(argv)`` in this process: its exit code, stdout and
    stderr, as a user sees them (`tests/node/test_cli.py` starts the command as a process)."""
    return actorq_main(*args)


async def _cli_beside(*args: str) -> subprocess.CompletedProcess[str]:
    """``actorq *args`` through its ``main(argv)`` in this process, on a thread: the node the
    test's loop runs keeps answering it (the command reads the journal and asks the node)."""
    return await asyncio.to_thread(actorq_main, *args)


async def test_cli_pause_list_status_resume_with_a_node_running(topology):
    topo = topology(TASKS, processes=1, queues=("default", "other"))
    config = str(topo.toml_path)
    async with Node(topo.config) as node:
        paused = await _cli_beside("queues", "pause", "default", "--config", config)
        assert paused.returncode == EXIT_OK, paused.stderr
        assert paused.stdout.strip() == ("queue 'default' paused: no node leases its jobs; running jobs finish")
        again = await _cli_beside("queues", "pause", "default", "--config", config)
        assert "was already paused" in again.stdout
        held = [Job("pz.work") for _ in range(2)]
        await node.queue("default").enqueue_many(held)
        marker = Job("pz.work")
        await node.queue("other").enqueue(marker)
        await eventually(lambda: topo.states().get(marker.id) == "succeeded", message="the other queue ran")
        listed = await _cli_beside("queues", "list", "--json", "--config", config)
        listing = json.loads(listed.stdout)["queues"]
        assert {name: (q["paused"], q["ready"], q["states"]) for name, q in listing.items()} == {
            "default": (True, 2, {"ready": 2}), "other": (False, 0, {"succeeded": 1})}
        assert listing["default"]["oldest_ready_age"] >= 0 and listing["other"]["oldest_ready_age"] is None
        table = await _cli_beside("queues", "list", "--config", config)
        # queue, paused or running, then blocked scheduled ready leased retry succeeded failed dead cancelled,
        # then the age
        assert [line.split()[:8] for line in table.stdout.splitlines()[1:]] == [
            ["default", "paused", "0", "0", "2", "0", "0", "0"], ["other", "running", "0", "0", "0", "0", "0", "1"]]
        status = await _cli_beside("status", "--json", "--config", config)
        assert json.loads(status.stdout)["paused"] == ["default"]
        assert "paused queues (lease nothing): default" in (await _cli_beside("status", "--config", config)).stdout
        resumed = await _cli_beside("queues", "resume", "default", "--config", config)
        assert resumed.returncode == EXIT_OK and resumed.stdout.strip() == "queue 'default' resumed"
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"succeeded": 2}, "other": {"succeeded": 1}}


@pytest.mark.parametrize("args, expected", [
    (("queues", "pause"), "actorq queues pause: the following arguments are required: NAME"),
    (("queues", "resume", ""), "argument NAME: expected a non-empty queue name, got ''"),
    (("queues", "list", "extra"), "actorq: unrecognized arguments: extra"),
    (("queues", "stop", "x"), "argument ACTION: invalid choice: 'stop' (choose from 'list', 'pause', 'resume', "
                              "'clear')"),
    (("queues", "pause", "x" * 256), "actorq queues: a queue name may have at most 255 characters"),
])
def test_g12_bad_queues_input_is_one_line_naming_what_is_expected(topology, args, expected):
    topo = topology(TASKS, processes=1)
    result = _cli(topo, *args, "--config", str(topo.toml_path))
    assert result.returncode == EXIT_CONFIG, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr


# -- cancelling a job from the command line and the Client (journal-level; see docs/timeouts.md) -----


async def test_cli_cancel_a_waiting_job_a_finished_one_and_an_unknown_id(topology):
    topo = topology(TASKS, processes=1)
    config = str(topo.toml_path)
    with topo.client() as client:
        later = client.enqueue(Job("pz.work", delay=3600))
        assert client.cancel("no-such-job") is False
    cancelled = _cli(topo, "jobs", "cancel", later, "--config", config)
    assert cancelled.returncode == EXIT_OK and cancelled.stdout.strip() == f"job {later} cancelled"
    again = _cli(topo, "jobs", "cancel", later, "--config", config)
    assert again.returncode == EXIT_OK
    assert again.stdout.strip() == f"job {later} had already finished (cancelled): nothing to cancel"
    unknown = _cli(topo, "jobs", "cancel", "nope", "--config", config)
    assert unknown.returncode == EXIT_CONFIG and "actorq jobs cancel: no job 'nope' in journal" in unknown.stderr
    bad = _cli(topo, "jobs", "cancel", "", "--config", config)
    assert bad.returncode == EXIT_CONFIG and "argument ID: expected a job id of 1 to 255 characters" in bad.stderr
    assert topo.states()[later] == "cancelled"


async def test_cancel_of_a_running_job_fences_its_late_ack(topology, tmp_path):
    topo = topology(TASKS, processes=1)
    release = tmp_path / "go"
    running = Job("pz.waits", [str(release)])
    async with Node(topo.config) as node:
        await node.queue().enqueue(running)
        await eventually(lambda: len(topo.ledger.read()) == 1, message="the job never started")
        with topo.client() as client:
            assert client.cancel(running.id) is True
            assert client.cancel(running.id) is False
        release.write_text("go")  # it finishes; its ack answers a lease that is void
        await eventually(lambda: node.progress().stale_acks == 1, message="the late ack was fenced")
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"cancelled": 1}}


async def test_async_client_pauses_resumes_and_cancels(topology):
    from actorq import AsyncClient

    topo = topology(TASKS, processes=1)
    async with AsyncClient(topo.config.journal.resolved_url) as client:
        assert await client.pause_queue("default") is True
        assert await client.paused_queues() == ["default"]
        assert await client.resume_queue("default") is True
        job_id = await client.enqueue(Job("pz.work", delay=3600))
        assert await client.cancel(job_id) is True
        assert await client.cancel(job_id) is False
        assert (await client.get(job_id)).state == "cancelled"
