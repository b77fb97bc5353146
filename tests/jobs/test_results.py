"""Results and ``ask`` end to end, through real worker processes.

An embedded `Node` with real workers (SQLite and PostgreSQL journals), and clients in
other processes against an ``actorq run`` node: ask returns the value; a raising task
gives JobFailed with the remote type, message and traceback text; an unencodable or
oversized return value fails the attempt with a clear error; ask times out; a result is
fetched by id after the asker restarted; results expire and are swept.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actorq import AskTimeout, Client, Job, JobFailed, Node, ResultExpired
from actorq.testing import eventually

pytestmark = pytest.mark.timeout(180)

TASKS = """
@registry.task("res.add")
async def add(a, b):
    return {"sum": a + b, "parts": [a, b]}


@registry.task("res.add_sync")
def add_sync(a, b):
    return a + b


@registry.task("res.int_keys")
def int_keys():
    return {1: "one", "two": (2, 2.0, b"\x02", None, True)}


@registry.task("res.nothing")
def nothing():
    return None


@registry.task("res.boom", max_attempts=1)
def boom(text):
    raise ValueError(f"bad input: {text}")


@registry.task("res.unencodable", max_attempts=1)
def unencodable():
    return object()


@registry.task("res.too_big", max_attempts=1)
def too_big():
    return b"x" * 200_000


@registry.task("res.gated")
async def gated(path):
    while not os.path.exists(path):
        await asyncio.sleep(0.02)
    return "opened"


@registry.task("res.dies", max_attempts=1)
def dies():
    die()


@registry.task("res.brief", result_ttl=0.2)
def brief():
    return "soon gone"


@registry.task("res.unkept", result_ttl=0)
def unkept():
    return "not kept"
"""


async def test_ask_returns_what_the_task_returned(topology) -> None:
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        queue = node.queue("default")
        assert await queue.ask(Job("res.add", [2, 3]), timeout=30) == {"sum": 5, "parts": [2, 3]}
        assert await queue.ask(Job("res.add_sync", [2, 3]), timeout=30) == 5
        assert await queue.ask(Job("res.nothing"), timeout=30) is None
        assert await queue.ask(Job("res.int_keys"), timeout=30) == {1: "one", "two": [2, 2.0, b"\x02", None, True]}
        assert await queue.ask(Job("res.unkept"), timeout=30) is None  # result_ttl=0 keeps nothing
        # many at once: each waiter gets its own job's value
        values = await asyncio_gather(*(queue.ask(Job("res.add_sync", [i, i]), timeout=60) for i in range(50)))
        assert values == [2 * i for i in range(50)]
        assert not node.runtime.waiters.watched, "finished waits leave nothing behind"


async def asyncio_gather(*aws):  # noqa: ANN001, ANN201 - a list, in order
    return await asyncio.gather(*aws)


async def test_a_raising_task_gives_job_failed_with_type_message_and_traceback(topology) -> None:
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        with pytest.raises(JobFailed) as raised:
            await node.queue("default").ask(Job("res.boom", ["x"]), timeout=30)
    failed = raised.value
    assert (failed.state, failed.type, failed.message) == ("dead", "ValueError", "bad input: x")
    assert failed.traceback is not None
    assert failed.traceback.startswith("Traceback (most recent call last):"), failed.traceback
    assert "in boom" in failed.traceback and failed.traceback.rstrip().endswith("ValueError: bad input: x")
    assert topo.info(failed.job_id).errors == ["ValueError: bad input: x"]  # the error text is unchanged


async def test_an_outcome_no_ack_brings_reaches_the_asker_by_its_fallback_read(topology) -> None:
    """A worker killed mid-job: the dispatcher's reclaim settles it (no ack, so no push)."""
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        with pytest.raises(JobFailed) as raised:
            await node.queue("default").ask(Job("res.dies"), timeout=60)
    failed = raised.value
    assert (failed.state, failed.type, failed.traceback) == ("dead", "", None)
    assert failed.message.startswith("worker died"), failed.message


async def test_an_unencodable_or_oversized_result_fails_the_attempt_with_a_clear_error(topology) -> None:
    topo = topology(TASKS, max_frame_bytes=131_072)  # results up to 48 KiB
    async with Node(topo.config) as node:
        queue = node.queue("default")
        with pytest.raises(JobFailed) as unencodable:
            await queue.ask(Job("res.unencodable"), timeout=30)
        with pytest.raises(JobFailed) as too_big:
            await queue.ask(Job("res.too_big"), timeout=30)
    assert unencodable.value.type == "ResultError"
    assert unencodable.value.message.startswith(
        "the return value of task 'res.unencodable' (object) cannot be encoded with msgpack"), unencodable.value
    assert too_big.value.type == "ResultError"
    assert too_big.value.message == ("the return value of task 'res.too_big' takes 200,005 bytes encoded; "
                                     "the limit is 49,152"), too_big.value


async def test_ask_times_out_and_the_result_is_fetched_by_id_afterwards(topology) -> None:
    topo = topology(TASKS)
    gate = topo.dir / "gate"
    async with Node(topo.config) as node:
        job = Job("res.gated", [str(gate)])
        with pytest.raises(AskTimeout, match="did not end within 0.3 s"):
            await node.queue("default").ask(job, timeout=0.3)
        assert not node.runtime.waiters.watched
        gate.touch()
        # another process, which never asked, waits for the same job by its id
        assert await _client_result(topo, job.id, timeout=60) == "'opened'"


async def test_an_asker_that_restarts_fetches_the_result_by_id(topology) -> None:
    """The asker's process ends before the job does; a new process fetches the result."""
    topo = topology(TASKS)
    gate = topo.dir / "gate"
    async with Node(topo.config) as node:
        job_id = (await _in_thread(_client_run, topo, f"""
            print(client.enqueue(Job("res.gated", [{str(gate)!r}])))
        """)).strip()
        gate.touch()
        await eventually(lambda: topo.states().get(job_id) == "succeeded", timeout=60, message="gated job done")
        assert await _client_result(topo, job_id, timeout=30) == "'opened'"
        # and the AsyncClient too
        assert (await _in_thread(_client_run, topo, f"""
            async def main():
                async with AsyncClient({topo.config.journal.resolved_url!r}) as aclient:
                    print(repr(await aclient.result({job_id!r}, timeout=30)))
            asyncio.run(main())
        """)).strip() == "'opened'"
        # ask: enqueue and wait under one deadline, from the sync and the async client
        assert (await _in_thread(_client_run, topo, f"""
            print(repr(client.ask(Job("res.gated", [{str(gate)!r}]), timeout=30)))
            async def main():
                async with AsyncClient({topo.config.journal.resolved_url!r}) as aclient:
                    print(repr(await aclient.ask(Job("res.gated", [{str(gate)!r}]), timeout=30)))
            asyncio.run(main())
        """)).strip().splitlines() == ["'opened'", "'opened'"]
        assert node.status() is not None


async def test_results_expire_and_the_upkeep_removes_them(topology) -> None:
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        job = Job("res.brief")
        assert await node.queue("default").ask(job, timeout=30) == "soon gone"
        with Client(topo.config.journal.resolved_url) as client:
            await eventually(lambda: _expired(client, job.id), timeout=30, message="the result expired")
            with pytest.raises(ResultExpired):
                client.result(job.id, timeout=1)

        def swept() -> bool:
            with sqlite3.connect(topo.journal_path) as conn:
                return conn.execute("SELECT result FROM actorq_jobs WHERE id = ?", (job.id,)).fetchone() == (None,)

        await eventually(swept, timeout=60, message="the node's upkeep removed the expired result")


async def test_node_wide_ttl_of_zero_keeps_no_results(topology) -> None:
    topo = topology(TASKS, results={"ttl": 0})
    async with Node(topo.config) as node:
        assert await node.queue("default").ask(Job("res.add_sync", [1, 1]), timeout=30) is None


async def test_ask_and_job_failed_on_postgresql(topology, pg_schema) -> None:
    from journal_support import PG_URL

    topo = topology(TASKS, journal_url=PG_URL, schema=pg_schema)
    async with Node(topo.config) as node:
        queue = node.queue("default")
        assert await queue.ask(Job("res.add", [1, 2]), timeout=30) == {"sum": 3, "parts": [1, 2]}
        with pytest.raises(JobFailed) as raised:
            await queue.ask(Job("res.boom", ["pg"]), timeout=30)
        assert (raised.value.type, raised.value.message) == ("ValueError", "bad input: pg")
        assert raised.value.traceback and "in boom" in raised.value.traceback
        job = Job("res.add_sync", [4, 4])
        await queue.enqueue(job)
        with Client(PG_URL, schema=pg_schema) as client:
            assert await asyncio.to_thread(client.result, job.id, 30) == 8


def test_a_client_in_another_process_against_actorq_run(topology) -> None:
    from node_process import NodeProcess

    topo = topology(TASKS, processes=1)
    node = NodeProcess(topo, 1, "--quiet")
    try:
        out = _client_run(topo, """
            ids = [client.enqueue(Job("res.add_sync", [20, 22])),
                   client.enqueue(Job("res.boom", ["sub"], max_attempts=1))]
            print(repr(client.result(ids[0], timeout=60)))
            try:
                client.result(ids[1], timeout=60)
            except JobFailed as exc:
                print(exc.type, exc.message, "Traceback" in exc.traceback)
            try:
                client.result("no-such-job", timeout=0.2)
            except AskTimeout as exc:
                print(exc)
        """)
    finally:
        node.proc.terminate()
    assert node.proc.wait(timeout=60) == 0, node.output()[-2000:]
    assert out.splitlines() == [
        "42",
        "ValueError bad input: sub True",
        "job no-such-job did not end within 0.2 s (unknown to the journal); it goes on, and its result can be "
        "fetched later by id (Client.result)",
    ]


def test_ask_and_result_refuse_a_timeout_that_is_no_number_of_seconds(tmp_path: Path) -> None:
    with Client(f"sqlite:///{tmp_path / 'j.db'}") as client:
        for bad in (0, -1, "5", None):
            with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
                client.result("x", timeout=bad)  # type: ignore[arg-type]


def _expired(client: Client, job_id: str) -> bool:
    outcome = client.outcome(job_id)
    return outcome is not None and outcome.expired


def _client_run(topo, body: str) -> str:  # noqa: ANN001
    """Run `body` in a new Python process with ``client`` open on the topology's journal; its stdout."""
    script = (
        "import asyncio\n"
        "from actorq import AskTimeout, AsyncClient, Client, Job, JobFailed\n"
        f"client = Client({topo.config.journal.resolved_url!r})\n"
        + textwrap.dedent(body)
        + "\nclient.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=topo.dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _client_result(topo, job_id: str, timeout: float) -> str:  # noqa: ANN001
    return (await _in_thread(_client_run, topo, f"print(repr(client.result({job_id!r}, timeout={timeout!r})))")).strip()


async def _in_thread(fn, *args):  # noqa: ANN001, ANN202 - the node's loop must go on meanwhile
    return await asyncio.to_thread(fn, *args)
