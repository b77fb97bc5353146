"""Queue limits end to end: real nodes and worker processes (docs/flow-control.md).

Each job writes "start" and "end" lines to a ledger shared by every process (one
``O_APPEND`` write each, so the file's order is the order they ran in). Replaying
the file gives the most jobs that ran at once; it never passes the queue's limit.
No timing is asserted: the jobs sleep a little only so that they would overlap.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from actorq import Client, Job, Node, QueueFull
from actorq.node.cli import main as cli_main
from actorq.node.config import ConfigError, parse_config
from actorq.node.constants import EXIT_FULL
from actorq.testing import Ledger, eventually

TASKS = """
@registry.task("fc.hold", queue="limited")
async def hold(path, seconds):
    ctx = current_job()
    own = Ledger(path)
    own.record(ctx.id, ctx.attempt, tag="start")
    await asyncio.sleep(seconds)
    own.record(ctx.id, ctx.attempt, tag="end")


@registry.task("fc.later", queue="full")
def later():
    pass
"""


def most_at_once(ledger: Ledger) -> int:
    """The most jobs between their "start" and "end" lines at any point of the file."""
    running = peak = 0
    for entry in ledger.read():
        running += 1 if entry.tag == "start" else -1
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("rule, limit", [("concurrency", 2), ("node_concurrency", 3)])
async def test_a_limited_queue_never_runs_more_than_its_limit(topology, tmp_path, rule, limit) -> None:
    # 2 processes x 4 slots (+4 prefetch): 8 could run at once without the limit
    topo = topology(TASKS, processes=2, concurrency=4, queues=("limited",), queue_limits={"limited": {rule: limit}})
    ledger = Ledger(tmp_path / "runs.txt")
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([Job("fc.hold", [str(ledger.path), 0.02]) for _ in range(24)])
        counts = await node.wait_idle(timeout=60)
    assert counts == {"limited": {"succeeded": 24}}
    assert len(ledger.read()) == 48
    assert most_at_once(ledger) <= limit


async def test_two_nodes_on_postgresql_share_a_queues_concurrency(topology, pg_schema, tmp_path) -> None:
    from journal_support import PG_URL

    topos = [topology(TASKS, processes=1, concurrency=4, queues=("limited",), journal_url=PG_URL, schema=pg_schema,
                      name=name, toml_name=f"{name}.toml", queue_limits={"limited": {"concurrency": 3}})
             for name in ("node-a", "node-b")]
    ledger = Ledger(tmp_path / "runs.txt")
    async with Node(topos[0].config) as a, Node(topos[1].config) as b:
        await a.queue().enqueue_many([Job("fc.hold", [str(ledger.path), 0.02]) for _ in range(30)])
        await a.wait_idle(timeout=60)
        await b.wait_idle(timeout=60)
        with topos[0].client() as client:
            counts = client.counts()
    assert counts == {"limited": {"succeeded": 30}}
    assert most_at_once(ledger) <= 3


async def test_max_depth_refuses_through_queue_ref_client_node_endpoint_and_cli(topology, capsys, caplog) -> None:
    # no worker serves "full": its jobs wait, and the fourth finds it full
    topo = topology(TASKS, processes=1, queues=("default",), queue_limits={"full": {"max_depth": 3}})
    async with Node(topo.config) as node:
        ref = node.queue()
        await ref.enqueue_many([Job("fc.later"), Job("fc.later")])
        with pytest.raises(QueueFull) as by_ref:
            await ref.enqueue_many([Job("fc.later"), Job("fc.later")])  # one fits, one is refused
        assert (by_ref.value.queue, by_ref.value.depth, by_ref.value.limit) == ("full", 3, 3)

        def via_node() -> QueueFull:
            with topo.client() as client:  # SQLite with a node: through its producer endpoint
                with pytest.raises(QueueFull) as caught:
                    client.enqueue(Job("fc.later"))
            return caught.value

        def direct() -> QueueFull:
            with Client(topo.config.journal.resolved_url, via_node=False) as client:
                with pytest.raises(QueueFull) as caught:
                    client.enqueue(Job("fc.later"))
            return caught.value

        for error in (await asyncio.to_thread(via_node), await asyncio.to_thread(direct)):
            assert (error.queue, error.depth, error.limit) == ("full", 3, 3)
        assert str(error) == "queue 'full' is full: 3 waiting jobs, max_depth 3"

        def blocked_then_refused() -> None:
            with Client(topo.config.journal.resolved_url, via_node=False) as client:
                with pytest.raises(QueueFull):
                    client.enqueue(Job("fc.later"), block=0.05)
                with pytest.raises(ValueError, match="block must be a number of seconds from 0 to 86400"):
                    client.enqueue(Job("fc.later"), block=-1)

        await asyncio.to_thread(blocked_then_refused)
        ref.tell(Job("fc.later"))  # nobody awaits its answer: the writer says it in the log
        await eventually(lambda: any("sent with tell were not added: queue 'full' is full" in r.getMessage()
                                     for r in caplog.records), timeout=20, message="the refused tell logged")
        # a producer blocking for room gets it once a waiting job leaves (here: cancelled)
        waiting = sorted(topo.states())
        blocked = asyncio.ensure_future(ref.enqueue(Job("fc.later"), block=60))

        def cancel_one() -> bool:
            with Client(topo.config.journal.resolved_url, via_node=False) as client:
                return client.cancel(waiting[0])

        assert await asyncio.to_thread(cancel_one)
        assert await blocked not in waiting
    # the limit is the journal's: the command line meets it with no node running
    assert cli_main(["enqueue", "--config", str(topo.toml_path), "fc.later"]) == EXIT_FULL
    assert capsys.readouterr().err.strip() == (
        "actorq enqueue: queue 'full' is full: 3 waiting jobs, max_depth 3; nothing of this batch was added")
    with topo.client() as client:
        assert client.counts() == {"full": {"ready": 3, "cancelled": 1}}
    # actorq status shows the stored limits
    assert cli_main(["status", "--config", str(topo.toml_path), "--timeout", "0.2"]) == 0
    assert "queue full: max_depth 3 (docs/flow-control.md)" in capsys.readouterr().out.splitlines()
    assert cli_main(["status", "--config", str(topo.toml_path), "--json", "--timeout", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["limits"] == {"full": {"max_depth": 3}}


@pytest.mark.parametrize("table, message", [
    ({"limited": {"concurrency": 0}}, "queues.limited.concurrency: expected an integer from 1 to 1000000000, got 0"),
    ({"limited": {"max_depth": 2.5}}, "queues.limited.max_depth: expected an integer from 1 to 1000000000, got 2.5"),
    ({"limited": {"node_concurrency": True}}, "queues.limited.node_concurrency: expected an integer"),
    ({"limited": {"concurency": 3}}, "queues.limited.concurency: unknown key; did you mean 'concurrency'?"),
    ({"limited": 3}, "queues.limited: expected a table, got 3 (int)"),
    ({"q" * 300: {}}, "queues: a queue name may have at most"),
])
def test_queue_tables_are_validated_with_file_and_key(table, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"queues": table}, source="topology.toml")
    assert str(caught.value).startswith(f"topology.toml: {message}")


async def test_an_async_client_blocks_on_the_loop_then_raises_or_gets_room(tmp_path) -> None:
    from actorq import AsyncClient
    from actorq.journal import QueueLimits, SQLiteJournal

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    journal = SQLiteJournal(tmp_path / "journal.db")
    journal.declare_queues([QueueLimits("full", max_depth=1)])
    async with AsyncClient(url) as client:
        first = await client.enqueue(Job("fc.later"), "full")
        with pytest.raises(QueueFull):
            await client.enqueue(Job("fc.later"), "full", block=0.05)
        blocked = asyncio.ensure_future(client.enqueue(Job("fc.later"), "full", block=60))
        await asyncio.sleep(0)
        assert await asyncio.to_thread(journal.cancel, first)  # room: the blocked producer gets in
        assert await blocked != first
    assert journal.counts() == {"full": {"cancelled": 1, "ready": 1}}
    journal.close()
