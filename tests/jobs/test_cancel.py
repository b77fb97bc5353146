"""Cancelling a running job, end to end through real worker processes, on both journals.

The journal cancels at once and voids the lease; the node holding the job learns
of it from its poll of held jobs (every liveness period) and stops it: an async
task gets CancelledError, a sync task sees ``current_job().cancelled``, and one
that ignores it past ``workers.cancel_grace`` has its process replaced. Every
late answer is fenced.
"""

from __future__ import annotations

import pytest

from actorq import Job, Node
from actorq.testing import eventually

TASKS = """
@registry.task("cx.async_long")
async def async_long():
    record()
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        record("cancelled")
        raise


@registry.task("cx.sync_polite")
def sync_polite():
    record()
    while not current_job().cancelled:
        time.sleep(0.01)
    record("saw-cancel")


@registry.task("cx.sync_stubborn")
def sync_stubborn():
    record()
    time.sleep(600)


@registry.task("cx.quick")
async def quick():
    record()
"""


@pytest.fixture(params=["sqlite", "postgres"])
def journal_choice(request: pytest.FixtureRequest) -> dict[str, str]:
    """The `topology` keywords of each journal: the default SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    from journal_support import PG_URL

    return {"journal_url": PG_URL, "schema": request.getfixturevalue("pg_schema")}


def _notes(topo, job_id: str) -> list[str]:
    return [(e.tag.split("/", 2) + [""])[2] for e in topo.ledger.read() if e.job_id == job_id]


async def test_cancelling_a_running_async_job_raises_cancellederror_in_it(topology, journal_choice):
    topo = topology(TASKS, processes=1, **journal_choice)
    job = Job("cx.async_long")
    async with Node(topo.config) as node:
        await node.queue().enqueue(job)
        await eventually(lambda: _notes(topo, job.id) == [""], message="the job never started")
        with topo.client() as client:  # another process's client: the node learns it from its poll
            assert client.cancel(job.id) is True
        await eventually(lambda: _notes(topo, job.id) == ["", "cancelled"], message="the task was not cancelled")
        await eventually(lambda: node.progress().stale_acks == 1, message="the late ack was not fenced")
        after = Job("cx.quick")
        await node.queue().enqueue(after)  # the slot is free again
        counts = await node.wait_idle(timeout=60)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"cancelled": 1, "succeeded": 1}}


async def test_a_sync_job_sees_the_flag_and_returns(topology):
    topo = topology(TASKS, processes=1)
    job = Job("cx.sync_polite")
    async with Node(topo.config) as node:
        await node.queue().enqueue(job)
        await eventually(lambda: _notes(topo, job.id) == [""], message="the job never started")
        assert await node.cancel(job.id) is True
        assert await node.cancel(job.id) is False  # finished (cancelled): nothing to do
        await eventually(lambda: _notes(topo, job.id) == ["", "saw-cancel"], message="the flag was not seen")
        counts = await node.wait_idle(timeout=60)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"cancelled": 1}}


async def test_a_sync_job_that_ignores_the_cancel_has_its_process_replaced(topology, tmp_path):
    topo = topology(TASKS, processes=1, cancel_grace=0.2)
    job = Job("cx.sync_stubborn")
    async with Node(topo.config) as node:
        first = set(node.worker_pids())
        await node.queue().enqueue(job)
        await eventually(lambda: _notes(topo, job.id) == [""], message="the job never started")
        assert await node.cancel(job.id) is True
        await eventually(lambda: set(node.worker_pids()) - first, message="the worker was not replaced")
        after = Job("cx.quick")
        await node.queue().enqueue(after)
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"cancelled": 1, "succeeded": 1}}
    assert _notes(topo, job.id) == [""]  # never ran again


def test_g_bad_cancel_grace_is_refused_with_the_key(tmp_path):
    from actorq.node.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="workers.cancel_grace"):
        parse_config({"node": {"tasks": ["x"]}, "workers": {"cancel_grace": -1}}, source="topology.toml",
                     path=tmp_path / "topology.toml")


@pytest.mark.parametrize("body", [None, "id", [7], [""], ["x" * 256], {"ids": []}])
def test_g1_a_malformed_cancel_frame_is_refused(body):
    from actorq.jobs import wire
    from actorq.transports.codec import FrameError, encode

    with pytest.raises(FrameError, match="cancel needs a list of job ids"):
        wire.from_dispatcher(encode(wire.CANCEL, body), 1 << 20)
    assert wire.from_dispatcher(wire.Cancel(("a", "b")).encode(), 1 << 20) == wire.Cancel(("a", "b"))


async def test_two_nodes_on_postgresql_the_holder_stops_a_job_cancelled_and_obeys_a_pause_made_on_the_other(
        topology, pg_schema):
    # node A: a real `actorq run` process serving queue "only-a"; node B: embedded, serving "default".
    # B cancels the job A runs, then pauses and resumes A's queue: A learns both from the journal.
    import os
    import signal

    from journal_support import PG_URL
    from node_process import NodeProcess

    common = dict(processes=1, journal_url=PG_URL, schema=pg_schema, heartbeat_timeout=4.0)
    topo_a = topology(TASKS, name="node-a", queues=("only-a",), toml_name="node-a.toml", **common)
    topo_b = topology(TASKS, name="node-b", queues=("default",), toml_name="node-b.toml", **common)
    long_job = Job("cx.async_long")
    with topo_b.client() as client:
        client.enqueue(long_job, queue="only-a")
    a = NodeProcess(topo_a, 1)
    try:
        async with Node(topo_b.config) as node_b:
            await eventually(lambda: _notes(topo_a, long_job.id) == [""], timeout=60,
                             message="node A never started the job")
            assert await node_b.cancel(long_job.id) is True
            await eventually(lambda: _notes(topo_a, long_job.id) == ["", "cancelled"],
                             message="node A did not stop the job cancelled on node B")
            assert await node_b.pause_queue("only-a") is True
            held = [Job("cx.quick") for _ in range(2)]
            with topo_b.client() as client:
                client.enqueue_many(held, queue="only-a")
            marker = Job("cx.quick")
            await node_b.queue("default").enqueue(marker)
            await eventually(lambda: topo_b.states().get(marker.id) == "succeeded", message="node B ran its job")
            assert topo_b.all_in([j.id for j in held], "ready"), topo_b.states()
            assert await node_b.resume_queue("only-a") is True
            await eventually(lambda: topo_b.all_in([j.id for j in held], "succeeded"), timeout=60,
                             message="node A ran the resumed queue's jobs")
        os.kill(a.pid, signal.SIGTERM)
        assert await a.exit_code(timeout=60) == 0, a.output()
    except BaseException:
        a.kill_everything()
        raise
    assert {e.job_id for e in topo_a.ledger.read()} == {long_job.id} | {j.id for j in held}
    assert topo_b.states()[long_job.id] == "cancelled"
