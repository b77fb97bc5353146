"""Queue limits: at most N jobs of a queue at once across every worker and node, and
a maximum depth past which an enqueue is refused (never dropped).

The limits are `[queues.NAME]` tables in topology.toml (here the same keys, built in
code): `concurrency` counts every node's leases of the queue, `node_concurrency` this
node's, `max_depth` the queue's waiting jobs (ready, scheduled, retry). A refused
enqueue raises `actorq.QueueFull`; `block=seconds` waits for room instead. The command
line: `actorq enqueue --config topology.toml media.upload a.png` exits with code 5.

Run from the repository root:  python examples/12_queue_limits.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config
from actorq.testing import Ledger

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-limits-"))
    config = parse_config(
        {
            "node": {"name": "limits", "tasks": ["limits_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{workdir / 'limits.db'}"},
            # 2 processes x 4 slots: 8 jobs could run at once; the partner allows 2
            "workers": {"processes": 2, "concurrency": 4, "queues": ["partner"]},
            "queues": {"partner": {"concurrency": 2}, "uploads": {"max_depth": 3}},
        },
        source="12_queue_limits.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    ledger = Ledger(workdir / "runs.txt")
    async with actorq.Node(config) as node:
        queue = node.queue()  # each task's own queue
        await queue.enqueue_many([actorq.Job("partner.call", [str(ledger.path), n]) for n in range(12)])
        counts = await node.wait_idle(timeout=20.0)
        print("partner calls run:", counts["partner"]["succeeded"])
        running = most = 0
        for entry in ledger.read():  # the file's order is the order they ran in
            running += 1 if entry.tag == "start" else -1
            most = max(most, running)
        print("never more than 2 at once:", most <= 2)

        # no worker serves "uploads" here: its jobs wait, and the fourth finds it full
        await queue.enqueue_many([actorq.Job("media.upload", [f"{n}.png"]) for n in range(3)])
        try:
            await queue.enqueue(actorq.Job("media.upload", ["3.png"]))
        except actorq.QueueFull as full:
            print("refused:", full)
        try:
            await queue.enqueue(actorq.Job("media.upload", ["3.png"]), block=0.1)  # waits for room, then gives up
        except actorq.QueueFull as full:
            print("still full after waiting:", full.depth, "of", full.limit)


asyncio.run(main())

# Output:
# partner calls run: 12
# never more than 2 at once: True
# refused: queue 'uploads' is full: 3 waiting jobs, max_depth 3
# still full after waiting: 3 of 3
