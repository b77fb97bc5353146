"""Retention: finished jobs leave the journal once their state's time is up; dead ones stay longer.

The node's upkeep prunes them, a few seconds apart (here every second); `actorq jobs prune`
does it by hand, with or without a node running.
Run from the repository root:  python examples/10_retention.py
"""

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-retention-"))
    url = f"sqlite:///{workdir / 'retention.db'}"
    config = parse_config(
        {
            "node": {"name": "retention", "tasks": ["retention_demo.tasks:registry"], "log_level": "warning"},
            # kept after they finish: succeeded jobs a second (for the demo; default "1d"), dead ones a month
            "journal": {"url": url, "retain_succeeded": "1s", "retain_dead": "30d"},
            "dispatcher": {"poll_interval": 0.04},  # the upkeep runs every 25 polls: every second here
            "workers": {"processes": 1, "concurrency": 4},
        },
        source="10_retention.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue("default")
        for name in ("cat", "dog", "fox"):
            await queue.ask(actorq.Job("retention.thumbnail", [name]), timeout=10.0)
        try:
            await queue.ask(actorq.Job("retention.broken", ["owl"]), timeout=10.0)
        except actorq.JobFailed as failed:
            print("dead:", failed.message)
        with actorq.Client(url) as client:
            print("finished:", sorted(client.counts()["default"].items()))
            while "succeeded" in client.counts()["default"]:  # the upkeep prunes them within a second or two
                await asyncio.sleep(0.1)
            print("after the upkeep:", sorted(client.counts()["default"].items()))
    # by hand: every dead job, however young (a node may be running beside it)
    topology = workdir / "topology.toml"
    topology.write_text(f'[journal]\nurl = "{url}"\n')
    pruned = subprocess.run([sys.executable, "-m", "actorq.node.cli", "jobs", "--config", str(topology),
                             "prune", "--older-than", "0s", "--state", "dead"], capture_output=True, text=True)
    print(pruned.stdout.strip())


asyncio.run(main())

# Output:
# dead: cannot read owl
# finished: [('dead', 1), ('succeeded', 3)]
# after the upkeep: [('dead', 1)]
# pruned 1 job (dead) that finished more than 0s ago
