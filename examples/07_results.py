"""Results: ask a node's queue for what a task returns, or fetch it later by job id.

Run from the repository root:  python examples/07_results.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-results-"))
    url = f"sqlite:///{workdir / 'results.db'}"
    config = parse_config(
        {
            "node": {"name": "results", "tasks": ["results_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": url},
            "workers": {"processes": 1, "concurrency": 4},
            "results": {"ttl": 3600.0},  # keep return values an hour (default: a day)
        },
        source="07_results.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue("default")
        # ask: enqueue, then wait for the job's end (pushed when its completion commits)
        print("quote:", await queue.ask(actorq.Job("results.quote", [["tea", "cake"]]), timeout=10.0))
        try:
            await queue.ask(actorq.Job("results.refuse", ["scones"]), timeout=10.0)
        except actorq.JobFailed as failed:  # the remote error, as text
            print("failed:", failed.state, failed.type, failed.message)
            print("traceback ends:", failed.traceback.strip().splitlines()[-1])
        # a job enqueued earlier, by anyone: its result is fetched by id, until it expires
        job_id = await queue.enqueue(actorq.Job("results.briefly"))
        with actorq.Client(url) as client:
            print("by id:", await asyncio.to_thread(client.result, job_id, 10.0))
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# quote: {'total': 7, 'items': 2}
# failed: dead KeyError 'scones'
# traceback ends: KeyError: 'scones'
# by id: kept for a minute
# node stopped cleanly
