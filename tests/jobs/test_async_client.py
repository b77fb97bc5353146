"""`AsyncClient`: asyncio producers, through a running node or straight into the journal.

The node is a real ``actorq run`` (`NodeProcess`), so the test's client is a
producer in another process and goes through the node's producer endpoint.
"Never blocks the loop" is shown by progress, not by time: a task of the same
loop keeps counting while a call waits on a node that does not answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from actorq import AsyncClient, Job
from actorq.errors import NotCommitted
from actorq.journal import SQLiteJournal
from actorq.testing import eventually

from test_producers import TASKS, _never_directly, _start

pytestmark = pytest.mark.timeout(120)


def _ids_in_journal(path: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return Counter(row[0] for row in conn.execute("SELECT id FROM actorq_jobs"))


async def test_many_tasks_share_one_async_client_through_the_node(topology, monkeypatch) -> None:
    topo = topology(TASKS)
    node = await _start(topo, 1)
    _never_directly(monkeypatch)  # every job must go through the node's endpoint
    try:
        async with AsyncClient(topo.config.journal.url) as client:
            async def producer(k: int) -> list[str]:
                return [await client.enqueue(Job("prod.work", [k * 100 + n])) for n in range(10)]

            ids = [i for batch in await asyncio.gather(*(producer(k) for k in range(8))) for i in batch]
            ids += await client.enqueue_many([Job("prod.work", [n]) for n in range(1000, 1050)])
            # accepted means committed: every id is in the file when its call returns
            assert len(set(ids)) == 130 and set(_ids_in_journal(topo.config.journal.sqlite_path)) >= set(ids)
            await eventually(lambda: {e.job_id for e in topo.ledger.read()} >= set(ids), timeout=60,
                             message="every job ran")
            info = await client.get(ids[0])
            assert info is not None and info.state.value == "succeeded"
            assert (await client.counts())["default"]["succeeded"] == 130
    finally:
        os.kill(node.pid, signal.SIGTERM)
        assert await node.exit_code(timeout=60) == 0


async def test_a_call_waiting_on_a_silent_node_leaves_the_loop_free_and_ends_by_its_deadline(topology) -> None:
    topo = topology(TASKS)
    node = await _start(topo, 1)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    try:
        async with AsyncClient(topo.config.journal.url, timeout=2.0) as client:
            await client.enqueue(Job("prod.work", [0]))  # opens the link while the node answers
            os.killpg(node.pid, signal.SIGSTOP)
            try:
                counting = asyncio.ensure_future(ticker())
                with pytest.raises(NotCommitted):
                    await client.enqueue(Job("prod.work", [1]))
                stop.set()
                await counting
            finally:
                os.killpg(node.pid, signal.SIGCONT)
            # the loop ran the ticker all along (a blocked loop would have counted once or not at all)
            assert ticks >= 20, ticks
            assert await client.enqueue(Job("prod.work", [2]))  # the node answers again
    finally:
        os.kill(node.pid, signal.SIGTERM)
        assert await node.exit_code(timeout=60) == 0


async def test_without_a_node_it_writes_into_the_journal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    async with AsyncClient(url) as client:
        ids = await asyncio.gather(*(client.enqueue(Job("t.noop", [n])) for n in range(20)))
        assert (await client.counts()) == {"default": {"ready": 20}}
    journal = SQLiteJournal(tmp_path / "journal.db")
    try:
        assert {journal.get(i).state.value for i in ids} == {"ready"}  # type: ignore[union-attr]
    finally:
        journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.enqueue(Job("t.noop"))
