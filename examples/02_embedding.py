"""Embedding a node in an asyncio service: enqueue durably, then wait for the work.

Run from the repository root:  python examples/02_embedding.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-embed-"))
    config = parse_config(
        {
            "node": {"name": "embedded", "tasks": ["quickstart.quickstart_tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{workdir / 'embedded.db'}"},
            "workers": {"processes": 2, "concurrency": 8},
        },
        source="02_embedding.py",
        path=HERE / "topology.toml",  # tasks modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue("default")
        # enqueue returns once the job is committed: from here on it survives any crash
        first = await queue.enqueue(actorq.Job("quickstart.add", [2, 3]))
        print("accepted:", len(first), "character id")
        # tell returns at once; the commit follows in the writer's next group
        for i in range(99):
            queue.tell(actorq.Job("quickstart.checksum", [f"document {i}"]))
        counts = await node.wait_idle(timeout=60)
        print("default queue:", counts["default"])
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# accepted: 32 character id
# default queue: {'succeeded': 100}
# node stopped cleanly
