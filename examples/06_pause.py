"""Pause a queue on every node, then resume it.

A paused queue leases nothing (the pause lives in the journal, so every node
sharing it, and a restarted one, obeys); running jobs finish, and producers can
still enqueue into it. The command line does the same:
`actorq queues pause emails --config topology.toml`.

Run from the repository root:  python examples/06_pause.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-pause-"))
    config = parse_config(
        {
            "node": {"name": "pause", "tasks": ["lifecycle.lifecycle_tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{workdir / 'pause.db'}"},
            "workers": {"processes": 1, "queues": ["default", "emails"]},
        },
        source="06_pause.py",
        path=HERE / "topology.toml",
    )
    async with actorq.Node(config) as node:
        print("paused:", await node.pause_queue("emails"))
        print("paused queues:", await node.paused_queues())
        emails = node.queue("emails")
        await emails.enqueue_many([actorq.Job("lifecycle.send", [f"user{i}@example.com"]) for i in range(3)])
        # a job of another queue runs meanwhile; once it has, the emails are still waiting
        await node.queue("default").enqueue(actorq.Job("lifecycle.export", [1]))
        while (await node.counts()).get("default", {}).get("succeeded") != 1:
            await asyncio.sleep(0.02)
        print("emails while paused:", (await node.counts())["emails"])
        print("resumed:", await node.resume_queue("emails"))
        counts = await node.wait_idle(timeout=60)
        print("emails after resume:", counts["emails"])


asyncio.run(main())

# Output:
# paused: True
# paused queues: ['emails']
# emails while paused: {'ready': 3}
# resumed: True
# emails after resume: {'succeeded': 3}
