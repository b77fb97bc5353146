"""Outcomes and cancels pushed, end to end through real worker processes.

Each test turns the fallback poll it would otherwise lean on off or to a day, so
that only the push can bring the answer: the node's result waiters' fallback reads
(`results.POLL_FIRST`/`POLL_MAX`), a PostgreSQL client's `result_poll`, the
dispatcher's poll of cancels (`Dispatcher.cancel_polling`). The jobs are gated on a
file, touched only once the wait is in place, so they end after it started.

- SQLite: `Client.result` and `Client.cancel` through the node's producer endpoint
  (WAIT, CANCEL); the bound on waits, answered BUSY, and the client reading the
  journal instead.
- PostgreSQL: `Client.result` / `AsyncClient.result` woken by the done channel's
  NOTIFY; a cancel's NOTIFY stops the job on the node; a job that ends with no
  notification (a missed one) is found by the fallback read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from actorq import AsyncClient, Client, Job, JobFailed, Node
from actorq.jobs import producers, results
from actorq.testing import eventually

pytestmark = pytest.mark.timeout(120)

DAY = 86_400.0

TASKS = """
@registry.task("push.gated")
async def gated(path, value):
    while not os.path.exists(path):
        await asyncio.sleep(0.02)
    return value


@registry.task("push.long")
async def long():
    record()
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        record("cancelled")
        raise
"""


@pytest.fixture
def no_node_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's waiters read the journal once at once, then not for a day: only the writer's push wakes them."""
    monkeypatch.setattr(results, "POLL_FIRST", DAY)
    monkeypatch.setattr(results, "POLL_MAX", DAY)


def _notes(topo, job_id: str) -> list[str]:  # noqa: ANN001
    return [(e.tag.split("/", 2) + [""])[2] for e in topo.ledger.read() if e.job_id == job_id]


def _no_cancel_poll(node: Node) -> None:
    dispatcher = node.runtime.dispatcher
    assert dispatcher is not None
    dispatcher.cancel_polling = False


async def test_sqlite_result_through_the_node_endpoint_is_pushed(topology, no_node_fallback) -> None:
    topo = topology(TASKS, processes=1)
    gate = topo.dir / "gate"
    async with Node(topo.config) as node:
        server = node.runtime.producers
        job = Job("push.gated", [str(gate), {"n": 7}])
        with Client(topo.config.journal.resolved_url, node_endpoint=server.endpoint) as client:
            assert await asyncio.to_thread(client.enqueue, job) == job.id
            waiting = asyncio.create_task(asyncio.to_thread(client.result, job.id, 60))
            await eventually(lambda: server.waits == 1 and job.id in node.runtime.waiters.watched,
                             message="the node never took the wait")
            other = Job("push.gated", [str(gate), "async"])
            assert await asyncio.to_thread(client.enqueue, other) == other.id
            async with AsyncClient(topo.config.journal.resolved_url, node_endpoint=server.endpoint) as aclient:
                awaiting = asyncio.create_task(aclient.result(other.id, timeout=60))
                await eventually(lambda: server.waits == 2, message="the node never took the async client's wait")
                gate.touch()
                assert await waiting == {"n": 7}
                assert await awaiting == "async"
            # answered with the jobs' end, not with their live state at the timeout (the node's
            # waiters read no more for a day: only the writer's push could tell them)
            assert server.outcomes == 2
            assert topo.states()[job.id] == "succeeded"
        assert not node.runtime.waiters.watched, "finished waits leave nothing behind"
        assert server.waits_busy == 0


async def test_the_node_holds_a_bounded_number_of_waits_and_a_client_beyond_it_reads_the_journal(
        topology, no_node_fallback) -> None:
    topo = topology(TASKS, processes=1)
    gate = topo.dir / "gate"
    async with Node(topo.config) as node:
        server = node.runtime.producers
        server.max_waits = 1
        first, second = Job("push.gated", [str(gate), "first"]), Job("push.gated", [str(gate), "second"])
        await node.queue().enqueue_many([first, second])
        with Client(topo.config.journal.resolved_url, node_endpoint=server.endpoint) as one, \
                Client(topo.config.journal.resolved_url, node_endpoint=server.endpoint) as two:
            waiting_one = asyncio.create_task(asyncio.to_thread(one.result, first.id, 60))
            await eventually(lambda: server.waits == 1, message="the node never took the first wait")
            # a raw WAIT beyond the bound is answered BUSY at once, saying why
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.endpoint)
            try:
                sock.send(producers.encode_wait(5, second.id, 30.0))
                assert await asyncio.to_thread(sock.poll, 30_000), "no answer to a WAIT beyond the bound"
                kind, request_id, text = producers.parse_reply(sock.recv_multipart())
            finally:
                sock.close()
            assert (kind, request_id) == (producers.BUSY, 5)
            assert text == "1 result waits in progress (the most a node holds)"
            # a Client beyond the bound gets its result all the same: it reads the journal
            waiting_two = asyncio.create_task(asyncio.to_thread(two.result, second.id, 60))
            await eventually(lambda: server.waits_busy == 2, message="the second client was not refused")
            gate.touch()
            assert await waiting_one == "first"
            assert await waiting_two == "second"
        assert server.peak_waits == 1 and server.waits == 1 and server.outcomes == 1


async def test_sqlite_cancel_through_the_node_endpoint_stops_the_job_without_the_poll(topology) -> None:
    topo = topology(TASKS, processes=1)
    job = Job("push.long")
    async with Node(topo.config) as node:
        _no_cancel_poll(node)
        await node.queue().enqueue(job)
        await eventually(lambda: _notes(topo, job.id) == [""], message="the job never started")
        with Client(topo.config.journal.resolved_url, node_endpoint=node.runtime.producers.endpoint) as client:
            waiting = asyncio.create_task(asyncio.to_thread(client.result, job.id, 60))
            assert await asyncio.to_thread(client.cancel, job.id) is True
            await eventually(lambda: _notes(topo, job.id) == ["", "cancelled"],
                             message="the cancel was not pushed to the worker")
            with pytest.raises(JobFailed) as raised:
                await waiting
            assert raised.value.state == "cancelled"
            assert await asyncio.to_thread(client.cancel, job.id) is False  # it has ended
            assert await asyncio.to_thread(client.cancel, "no-such-job") is False


def _pg(topology, pg_schema, **kw):  # noqa: ANN001, ANN202
    from journal_support import PG_URL

    return topology(TASKS, processes=1, journal_url=PG_URL, schema=pg_schema, **kw), PG_URL


async def test_postgresql_result_is_woken_by_notify_not_by_its_poll(topology, pg_schema) -> None:
    topo, url = _pg(topology, pg_schema)
    gate = topo.dir / "gate"
    async with Node(topo.config):
        job, other = Job("push.gated", [str(gate), [1, 2]]), Job("push.gated", [str(gate), "async"])
        with Client(url, schema=pg_schema, result_poll=DAY) as client:
            client.enqueue_many([job, other])
            waiting = asyncio.create_task(asyncio.to_thread(client.result, job.id, 60))
            async with AsyncClient(url, schema=pg_schema, result_poll=DAY) as aclient:
                awaiting = asyncio.create_task(aclient.result(other.id, timeout=60))
                watch = client.done_watch()
                assert watch is not None
                # listening, and both waiters in place, before the jobs can end
                await eventually(lambda: watch.connected.is_set() and watch.waiting == 1,
                                 message="the client's waiter is not listening")

                def async_waiting() -> bool:
                    inner = aclient._client  # the AsyncClient's own Client, on its thread
                    w = inner.done_watch() if inner is not None else None
                    return w is not None and w.connected.is_set() and w.waiting == 1

                await eventually(async_waiting, message="the async client's waiter is not listening")
                inner = aclient._client.done_watch()
                before, inner_before = watch.wakes, inner.wakes
                gate.touch()
                assert await waiting == [1, 2]
                assert await awaiting == "async"
                # each was woken by its job's NOTIFY (their fallback reads are a day apart)
                assert watch.wakes > before and inner.wakes > inner_before
            assert watch.waiting == 0


async def test_postgresql_a_missed_notification_is_made_up_by_the_fallback_read(topology, pg_schema) -> None:
    import psycopg

    from actorq.journal.postgres import channel_of

    topo, url = _pg(topology, pg_schema)
    with Client(url, schema=pg_schema, result_poll=0.05) as client:
        job = Job("push.gated", ["never", 0])
        client.enqueue(job)  # no node runs: the job stays ready
        reads = [0]
        read = client.outcome

        def counted(job_id: str):  # noqa: ANN202
            reads[0] += 1
            return read(job_id)

        client.outcome = counted  # type: ignore[method-assign]
        waiting = asyncio.create_task(asyncio.to_thread(client.result, job.id, 60))
        watch = client.done_watch()
        await eventually(lambda: watch.connected.is_set() and watch.waiting == 1, message="not listening")
        # it reads again with no notification at all (the first read is at once; the deadline is 60 s away)
        await eventually(lambda: reads[0] >= 3, message="the client does not read again without a notification")
        # the job ends without its NOTIFY (as if the notification were lost)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'UPDATE "{pg_schema}".actorq_jobs SET state = %s, finished_at = now() WHERE id = %s',
                         ("succeeded", job.id))
        assert await waiting is None
        # a notification that is not ours (not a JSON list of ids) wakes every waiter: safe
        second = Job("push.gated", ["never", 0])
        client.enqueue(second)
        with Client(url, schema=pg_schema, result_poll=DAY) as patient:
            waiting = asyncio.create_task(asyncio.to_thread(patient.result, second.id, 60))
            pwatch = patient.done_watch()
            await eventually(lambda: pwatch.connected.is_set() and pwatch.waiting == 1, message="not listening")
            before = pwatch.wakes
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'UPDATE "{pg_schema}".actorq_jobs SET state = %s, finished_at = now() WHERE id = %s',
                             ("succeeded", second.id))
                conn.execute("SELECT pg_notify(%s, %s)", (channel_of(pg_schema, "done"), "{not json"))
            assert await waiting is None
            assert pwatch.wakes > before


async def test_postgresql_cancel_notify_stops_the_running_job_without_the_poll(topology, pg_schema) -> None:
    topo, url = _pg(topology, pg_schema)
    job = Job("push.long")
    async with Node(topo.config) as node:
        _no_cancel_poll(node)
        await node.queue().enqueue(job)
        await eventually(lambda: _notes(topo, job.id) == [""], message="the job never started")
        with Client(url, schema=pg_schema) as client:  # straight into the journal: its NOTIFY tells the node
            assert client.cancel(job.id) is True
        await eventually(lambda: _notes(topo, job.id) == ["", "cancelled"],
                         message="the cancel's NOTIFY did not stop the job")
        assert node.runtime.dispatcher.stats.cancels_sent == 1


async def test_postgresql_a_node_waiter_is_woken_by_another_processs_done_notify(
        topology, pg_schema, no_node_fallback) -> None:
    """A job another node ends (here: a row updated and announced as a node's statement would):
    the node's listener hears the done channel and its waiter reads at once."""
    import json

    import psycopg

    from actorq.journal.postgres import channel_of

    topo, url = _pg(topology, pg_schema)
    async with Node(topo.config) as node:
        job = Job("push.gated", ["never", 0])
        asking = asyncio.create_task(node.queue("elsewhere").ask(job, timeout=60))  # no worker serves it
        await eventually(lambda: job.id in node.runtime.waiters.watched, message="the ask never waited")
        with psycopg.connect(url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(f'UPDATE "{pg_schema}".actorq_jobs SET state = %s, finished_at = now() WHERE id = %s',
                             ("succeeded", job.id))
                conn.execute("SELECT pg_notify(%s, %s)", (channel_of(pg_schema, "done"), json.dumps([job.id])))
        assert await asking is None


def test_wait_and_cancel_frames_are_validated_in_full() -> None:
    budget = 1 << 24
    assert producers.parse_request(producers.encode_wait(3, "job-1", 2.5), budget) == (
        producers.WAIT, 3, ("job-1", 2.5))
    assert producers.parse_request(producers.encode_cancel(4, "job-1"), budget) == (producers.CANCEL, 4, "job-1")
    from actorq.transports.codec import FrameError, encode

    for bad in ([3, "job-1"], [3, "job-1", 0], [3, "job-1", -1.0], [3, "job-1", float("nan")],
                [3, "job-1", float("inf")], [3, "job-1", DAY + 1], [3, "job-1", "5"], [3, "job-1", True],
                [3, "", 1.0], [3, "x" * 256, 1.0], [3, 7, 1.0], [-1, "job-1", 1.0], [2**63, "job-1", 1.0],
                [3, "job-1", 1.0, None], None, "job-1"):
        with pytest.raises(FrameError) as raised:
            producers.parse_request(encode(producers.WAIT, bad), budget)
        assert raised.value.reason == "bad_body", bad
    for bad in ([4], [4, "job-1", 1.0], [4, None], [4, b"job-1"], [True, "job-1"]):
        with pytest.raises(FrameError) as raised:
            producers.parse_request(encode(producers.CANCEL, bad), budget)
        assert raised.value.reason == "bad_body", bad
    # the client's side: an OUTCOME is checked before it is believed
    good = ["succeeded", b"\xa2ok", False, None, None]
    assert producers.read_outcome("j", good).state == "succeeded"
    assert producers.read_outcome("j", [None, None, False, None, None]) is None
    for bad in (["won", None, False, None, None], ["dead", "text", False, None, None],
                ["dead", None, 0, None, None], ["dead", None, False, 7, None],
                ["dead", None, False, None, "x" * 5000], ["dead"]):
        with pytest.raises(FrameError):
            producers.read_outcome("j", bad)


def test_result_poll_is_range_checked(tmp_path: Path) -> None:
    for bad in (0, -1.0, DAY + 1, "2"):
        with pytest.raises(ValueError, match="result_poll must be seconds > 0 and at most 86400"):
            Client(f"sqlite:///{tmp_path / 'j.db'}", result_poll=bad)  # type: ignore[arg-type]


async def test_the_endpoint_answers_a_live_state_at_the_timeout_and_busy_to_waits_when_it_stops(tmp_path) -> None:
    """The producer endpoint alone, with a stand-in for the node's waiters: a WAIT that times
    out is answered with the job's live state; WAITs still waiting at stop are answered BUSY."""
    from actorq.journal import JobResult, JobState

    released = asyncio.Event()

    async def wait(job_id: str, seconds: float) -> JobResult | None:
        if job_id == "unknown":
            return None
        if job_id == "times-out":
            return JobResult(job_id, JobState.READY, None, False, None, None)
        await released.wait()  # until the node stops
        return None

    loop = asyncio.get_running_loop()
    server = producers.ProducerServer(loop, f"ipc://{tmp_path / 'p.sock'}", lambda job, cb: None,
                                      max_frame_bytes=1 << 20, backlog=lambda: 0, wait=wait)
    server.start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)

    async def answer() -> tuple:
        assert await asyncio.to_thread(sock.poll, 30_000), "no answer from the producer endpoint"
        return producers.parse_reply(sock.recv_multipart())

    try:
        sock.send(producers.encode_wait(1, "times-out", 0.1))
        kind, request_id, body = await answer()
        assert (kind, request_id) == (producers.OUTCOME, 1)
        assert producers.read_outcome("times-out", body).state == JobState.READY
        sock.send(producers.encode_wait(2, "unknown", 0.1))
        kind, request_id, body = await answer()
        assert (kind, request_id, producers.read_outcome("unknown", body)) == (producers.OUTCOME, 2, None)
        sock.send(producers.encode_cancel(3, "any"))  # this endpoint takes no cancels
        assert await answer() == (producers.BUSY, 3, "this endpoint does not cancel jobs")
        sock.send(producers.encode_wait(4, "held", 60.0))
        await eventually(lambda: len(server._waiting) == 1, message="the wait was not taken")
        await server.stop(grace=0.1)
        assert await answer() == (producers.BUSY, 4, "the node is stopping")
        assert server.outcomes == 0 and server.waits == 3
    finally:
        sock.close()
        server.close()
