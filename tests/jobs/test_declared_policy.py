"""A job follows its task's declared policy however it was enqueued, unless the producer set a value.

Through real worker processes, on a real SQLite file, for each way a job is
enqueued by name (``Job("t.name")``): a node's queue ref, `actorq.Client`
without the registry (it asks the journal's task catalog, which the node wrote
at start), and ``actorq enqueue`` (which imports the registry named in the
topology file). Each job is counted in the independent ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

from actorq import Client, Job, Node
from actorq.testing import eventually

TASKS = """
@registry.task("declared.twice", max_attempts=2, retry=RetryPolicy(base=0.0, jitter=0.0))
async def twice(tag):
    record(tag)
    raise RuntimeError("always")


@registry.task("declared.mail", queue="emails", priority=7)
async def mail(tag):
    ctx = current_job()
    record(f"{tag}|{ctx.queue}|{ctx.max_attempts}")
"""


def _rows(topo, job_ids: list[str]) -> dict[str, tuple[str, int, int, str]]:
    """``{id: (queue, priority, max_attempts, state)}`` read straight from the journal file."""
    conn = sqlite3.connect(f"file:{topo.journal_path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(job_ids))
        rows = conn.execute(f"SELECT id, queue, priority, max_attempts, state FROM actorq_jobs WHERE id IN ({marks})",
                            job_ids).fetchall()
    finally:
        conn.close()
    return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


async def _cli_enqueue(topo, *args: str) -> str:
    # on a thread: ``actorq enqueue`` sends its job through the node, whose loop is this one
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "actorq.node.cli", "enqueue", "--config", str(topo.toml_path),
                             *args], cwd=topo.dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_declared_max_attempts_apply_to_jobs_enqueued_by_name_on_every_path(topology):
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        by_ref = await node.queue().enqueue(Job("declared.twice", ["ref"]))
        with Client(topo.config.journal.resolved_url) as client:  # no registry: the journal's catalog
            by_client = client.enqueue(Job("declared.twice", ["client"]))
            explicit = client.enqueue(Job("declared.twice", ["explicit"], max_attempts=3))
        by_cli = await _cli_enqueue(topo, "declared.twice", '"cli"')
        ids = [by_ref, by_client, by_cli, explicit]
        await eventually(lambda: topo.all_in(ids, "dead"), timeout=30,
                         message="every job ran out of attempts")
    runs = {job_id: len([e for e in topo.ledger.read() if e.job_id == job_id]) for job_id in ids}
    assert runs == {by_ref: 2, by_client: 2, by_cli: 2, explicit: 3}, runs
    rows = _rows(topo, ids)
    assert {rows[i][2] for i in (by_ref, by_client, by_cli)} == {2} and rows[explicit][2] == 3


async def test_declared_queue_and_priority_apply_unless_the_producer_names_its_own(topology):
    topo = topology(TASKS, queues=("emails",))
    async with Node(topo.config) as node:
        by_ref = await node.queue().enqueue(Job("declared.mail", ["ref"]))
        with Client(topo.config.journal.resolved_url) as client:
            by_client = client.enqueue(Job("declared.mail", ["client"]))
            elsewhere = client.enqueue(Job("declared.mail", ["elsewhere"], priority=1), queue="default")
        by_cli = await _cli_enqueue(topo, "declared.mail", '"cli"')
        named = await node.queue("default").enqueue(Job("declared.mail", ["named"]))
        ran = [by_ref, by_client, by_cli]
        await eventually(lambda: topo.all_in(ran, "succeeded"), timeout=30,
                         message="the jobs ran on the task's queue, the only one the workers consume")
        rows = _rows(topo, [*ran, elsewhere, named])
        # the producers that named a queue keep it: nobody consumes "default" here
        assert rows[elsewhere][0] == "default" and rows[elsewhere][3] == "ready", rows[elsewhere]
        assert rows[named][0] == "default" and rows[named][3] == "ready", rows[named]
    assert {rows[i][:2] for i in ran} == {("emails", 7)}, rows
    assert rows[elsewhere][1] == 1 and rows[named][1] == 7  # the producer's own priority wins
    notes = sorted(e.tag.split("/", 2)[2] for e in topo.ledger.read())
    assert notes == sorted(["cli|emails|20", "client|emails|20", "ref|emails|20"]), notes
