"""A worker never starts a job whose lease may have lapsed (ACCEPTANCE C19).

Each job reaches its worker with ``valid_until``, the `wire.lease_clock` reading
up to which the dispatcher vouches for its lease, and each committed renewal
sends the worker LEASES with a later one. A job found past its deadline before
it starts, on arrival or in the prefetch queue, is answered ``release`` unstarted
and counted; a renewal extends only the jobs still within their deadline.

* At the worker: a real `Worker` on the test's loop and a ROUTER the test holds.
* At the dispatcher: a real `Dispatcher` and journal writer on SQLite, and a
  worker peer the test drives: the deadlines it sends and the renewals.
* Through two nodes on PostgreSQL (C19): node A, each of its processes stopped
  with SIGSTOP past its leases while it holds prefetched jobs, node B takes and
  runs them; resumed, A starts none of them.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from pathlib import Path

import psycopg
from dispatcher_support import dispatcher_on_sqlite, peer
from node_process import NodeProcess
from worker_support import MAX_FRAME, acks_received, worker_on_router

from actorq import Job, TaskRegistry
from actorq.jobs import wire
from actorq.jobs.dispatcher import LEASE_TRUST
from actorq.jobs.task import encode_payload
from actorq.testing import Ledger, check_total_queue, eventually
from actorq.transports.codec import encode

registry = TaskRegistry()
ran: list[str] = []
gates: dict[str, asyncio.Event] = {}


@registry.task("deadline.run")
async def run(name: str) -> None:
    ran.append(name)
    if name in gates:
        await gates[name].wait()


def _job(name: str, lease_id: int, valid_until: float) -> wire.JobMessage:
    return wire.JobMessage(name, lease_id, "deadline.run", encode_payload([name], {}), 1, 20, "default", valid_until)


def _jobs_frame(jobs: list[wire.JobMessage]) -> bytes:
    """A JOBS frame carrying `jobs`, each with its own deadline."""
    return encode(wire.JOBS, [list(job) for job in jobs])


def _answers(router, items: int) -> dict[str, str]:  # noqa: ANN001
    """``{job id: how it was answered}`` from the acks on `router` (blocking: call it in an executor)."""
    answers: dict[str, str] = {}
    for ack in acks_received(router, items):
        answers.update((job_id, "ok") for job_id, _ in ack.succeeded)
        answers.update((job_id, wire.RELEASE) for job_id, _ in ack.released)
        answers.update((item.job_id, item.end) for item in ack.ended)
    return answers


# -- at the worker ------------------------------------------------------------------------------
async def test_a_job_arriving_past_its_deadline_is_given_back_unstarted(tmp_path: Path) -> None:
    ran.clear()
    loop = asyncio.get_running_loop()
    with worker_on_router(tmp_path, registry, concurrency=2, prefetch=2) as (worker, router):
        ident, hello = await loop.run_in_executor(None, router.recv_multipart)
        assert isinstance(wire.from_worker(hello, ident, MAX_FRAME), wire.Hello)
        now = wire.lease_clock()
        # as a JOBS frame that waited in the socket while its node was stopped
        frame = _jobs_frame([_job("lapsed", 11, now - 1.0), _job("valid", 12, now + 3600.0),
                             _job("forever", 13, math.inf)])
        router.send_multipart([ident, frame])
        answers = await loop.run_in_executor(None, _answers, router, 3)
    assert answers == {"lapsed": wire.RELEASE, "valid": "ok", "forever": "ok"}
    assert sorted(ran) == ["forever", "valid"] and worker.lapsed == 1


async def test_a_prefetched_job_whose_deadline_passed_is_given_back_and_a_renewal_does_not_revive_it(
        tmp_path: Path) -> None:
    ran.clear()
    gates.clear()
    gates["first"] = asyncio.Event()
    loop = asyncio.get_running_loop()
    with worker_on_router(tmp_path, registry, concurrency=1, prefetch=2) as (worker, router):
        ident, _ = await loop.run_in_executor(None, router.recv_multipart)
        now = wire.lease_clock()
        soon = now + 0.3
        worker._on_jobs([_job("first", 21, math.inf),  # holds the only slot until the gate opens
                         _job("lapsing", 22, soon),  # waits in the prefetch queue past its deadline
                         _job("renewed", 23, now + 3600.0)])
        assert [job.id for job in worker.backlog] == ["lapsing", "renewed"]
        await eventually(lambda: wire.lease_clock() > soon, timeout=10, message="the queued job's deadline passed")
        # the leases were renewed: only a job still within its deadline takes the new one
        router.send_multipart([ident, wire.Leases(math.inf).encode()])
        await eventually(lambda: worker.backlog[1].valid_until == math.inf, timeout=10,
                         message="the renewal reached the worker")
        assert worker.backlog[0].valid_until == soon, "a lapsed job keeps its deadline: its lease may be gone"
        gates["first"].set()
        answers = await loop.run_in_executor(None, _answers, router, 3)
    assert answers == {"first": "ok", "lapsing": wire.RELEASE, "renewed": "ok"}
    assert ran == ["first", "renewed"] and worker.lapsed == 1


# -- at the dispatcher -------------------------------------------------------------------------------
async def test_the_dispatcher_sends_each_job_with_a_deadline_before_its_lease_expiry_and_extends_it(
        tmp_path: Path) -> None:
    lease_timeout = 1.5  # renewed every 0.5 s
    async with dispatcher_on_sqlite(tmp_path, lease_timeout=lease_timeout) as harness:
        with peer(harness.endpoint) as worker:
            ids = await harness.enqueue(3)
            before = wire.lease_clock()
            worker.hello()
            jobs = await worker.receive(wire.Jobs)
            after = wire.lease_clock()
            assert isinstance(jobs, wire.Jobs) and sorted(job.id for job in jobs.jobs) == sorted(ids)
            # the lease was asked for between `before` and `after`; the journal's expiry is
            # lease_timeout after it committed, so the deadline is a share of it before that
            for job in jobs.jobs:
                assert before + LEASE_TRUST * lease_timeout <= job.valid_until <= after + LEASE_TRUST * lease_timeout
            renewal = await worker.receive(wire.Leases, between=worker.heartbeat)
            assert isinstance(renewal, wire.Leases)
            assert max(job.valid_until for job in jobs.jobs) < renewal.until <= (
                wire.lease_clock() + LEASE_TRUST * lease_timeout)
            assert [(await harness.info(job_id)).state for job_id in ids] == ["leased"] * 3


# -- C19: through two nodes on PostgreSQL ----------------------------------------------------------
C19_TASKS = """
started = Ledger(str(ledger.path) + ".started")


@registry.task("c19.slow")
async def slow(n):
    ctx = current_job()
    started.record(ctx.id, ctx.attempt, os.getpid(), os.environ.get("AQTEST_RUN", "-"))
    await asyncio.sleep(2.0)
    record()
"""


def _leased_by(schema: str, url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT id, lease_owner FROM "{schema}".actorq_jobs').fetchall()
    return {job_id: owner for job_id, owner in rows}


def _states(schema: str, url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT id, state FROM "{schema}".actorq_jobs').fetchall()
    return {job_id: state for job_id, state in rows}


async def test_c19_a_resumed_node_does_not_start_prefetched_jobs_whose_leases_lapsed(topology, pg_schema):
    from journal_support import PG_URL

    # A: one slot and four prefetched; short leases (renewed every second) and leader TTL,
    # so that B rescues A's jobs soon after A stops. B has a slot for each job: it runs the
    # five 2 s jobs side by side, not one after another (10 s)
    topo_a, topo_b = (
        topology(C19_TASKS, processes=1, concurrency=slots, prefetch=4, journal_url=PG_URL, schema=pg_schema,
                 name=name, lease_timeout=3.0, leader_ttl=2.0, shutdown_timeout=5.0, toml_name=f"{name}.toml")
        for name, slots in (("node-a", 1), ("node-b", 5)))
    started_a = Ledger(str(topo_a.ledger.path) + ".started")
    started_b = Ledger(str(topo_b.ledger.path) + ".started")
    a = NodeProcess(topo_a, 1)
    b: NodeProcess | None = None
    try:
        with topo_a.client() as client:
            accepted = set(client.enqueue_many([Job("c19.slow", [i]) for i in range(5)]))
        # A runs one job and holds the four others in its worker's prefetch queue
        await eventually(lambda: started_a.count() == 1 and all(
            (owner or "").startswith("node-a/") for owner in _leased_by(pg_schema, PG_URL).values()),
            timeout=60, message="node A runs one job and holds the other four")
        os.killpg(a.pid, signal.SIGSTOP)  # the node and its workers, mid-job
        try:
            ran_before_pause = {e.job_id for e in started_a.read()}
            b = NodeProcess(topo_b, 2)
            await eventually(lambda: all(s == "succeeded" for s in _states(pg_schema, PG_URL).values()),
                             timeout=120, message="node B ran every job after A's leases expired")
        finally:
            resumed_at = len(a.output())
            os.killpg(a.pid, signal.SIGCONT)
        # resumed: the running job finishes (its ack is fenced), and each prefetched one is answered
        await eventually(lambda: "in flight 0 " in a.output()[resumed_at:], timeout=60,
                         message="node A's worker answered every job it held")
        for node in (a, b):
            os.kill(node.pid, signal.SIGTERM)
            assert await node.exit_code(timeout=60) == 0, node.output()
    except BaseException:
        a.kill_everything()
        if b is not None:
            b.kill_everything()
        raise
    print(a.output()[-3000:])
    assert {e.job_id for e in started_a.read()} == ran_before_pause, "node A started a job after it resumed"
    assert len(ran_before_pause) == 1
    assert "did not start a job whose lease had lapsed" in a.output()
    assert {e.job_id for e in started_b.read()} == accepted
    entries = topo_a.ledger.read() + topo_b.ledger.read()
    check = check_total_queue(accepted, entries, set(accepted))
    print(check.summary())
    assert check.valid, check.summary()
    assert set(check.duplicated) <= ran_before_pause, "only the job running at the pause ran twice"
