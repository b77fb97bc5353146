"""Time limits and cancellation of running jobs.

A task's `timeout` stops an attempt past it: an async task is cancelled, a sync
task's worker process is replaced (its thread cannot be stopped). The attempt
ends "timed out after N s" and follows the retry policy. A job can set its own
limit (`Job(..., timeout=...)`). Cancelling a job stops it where it runs.

Run from the repository root:  python examples/05_timeouts_and_cancel.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-lifecycle-"))
    url = f"sqlite:///{workdir / 'lifecycle.db'}"
    config = parse_config(
        {
            "node": {"name": "lifecycle", "tasks": ["lifecycle.lifecycle_tasks:registry"], "log_level": "error"},
            "journal": {"url": url},
            "workers": {"processes": 1, "concurrency": 4, "cancel_grace": 5.0},
        },
        source="05_timeouts_and_cancel.py",
        path=HERE / "topology.toml",  # tasks modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue()
        slow = await queue.enqueue(actorq.Job("lifecycle.slow_fetch", ["https://example.invalid"]))
        crunch = await queue.enqueue(actorq.Job("lifecycle.crunch"))
        export = await queue.enqueue(actorq.Job("lifecycle.export", [100_000]))
        with actorq.Client(url) as client:
            await until(lambda: client.get(export).state == "leased")
            print("cancel a running export:", client.cancel(export))
            print("cancel it again:", client.cancel(export))
        await node.wait_idle(timeout=60)
        with actorq.Client(url) as client:
            for job_id in (slow, crunch, export):
                info = client.get(job_id)
                print(f"{info.task}: {info.state}, errors {info.errors}")
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# cancel a running export: True
# cancel it again: False
# lifecycle.slow_fetch: dead, errors ['timed out after 0.2 s', 'timed out after 0.2 s']
# lifecycle.crunch: dead, errors ['timed out after 0.2 s']
# lifecycle.export: cancelled, errors []
# node stopped cleanly
