"""Unique jobs with a period: a key held from the insert for `unique_for` seconds,
whatever the job's state, finished included.

A task that declares `unique_for` makes its jobs unique by task name and arguments;
a job can also bring its own `unique_key` and `unique_for`. An enqueue of a held key
adds nothing and returns the holder's id. The command line does the same:
`actorq enqueue --config topology.toml reports.daily 2026-12-01 --unique-for 3600`.

Run from the repository root:  python examples/09_unique.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-unique-"))
    url = f"sqlite:///{workdir / 'unique.db'}"
    config = parse_config(
        {
            "node": {"name": "unique", "tasks": ["unique_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": url},
            "workers": {"processes": 1},
        },
        source="09_unique.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue()  # each task's own queue
        first = actorq.Job("reports.daily", ["2026-12-01"])
        print("first:", await queue.ask(first, timeout=10.0))
        # the report is built; for the hour that follows, asking again adds no job
        again = await queue.enqueue(actorq.Job("reports.daily", ["2026-12-01"]))
        print("again, the same job:", again == first.id)
        print("other arguments:", await queue.ask(actorq.Job("reports.daily", ["2026-12-01", "csv"]), timeout=10.0))
        # a producer in any process: the period comes from the task catalog the node wrote
        with actorq.Client(url) as client:
            held = await asyncio.to_thread(client.enqueue, actorq.Job("reports.daily", ["2026-12-01"]))
        print("from a Client, the same job:", held == first.id)

        # a job's own key and period, on a task that declares none
        digest = actorq.Job("emails.digest", ["ann"], unique_key="digest:ann", unique_for=0.5)
        print("digest:", await queue.ask(digest, timeout=10.0))
        print("within the period:", await queue.enqueue(actorq.Job("emails.digest", ["ann"], unique_key="digest:ann"))
              == digest.id)
        await asyncio.sleep(0.5)  # the half second from its insert is over: the key is free
        later = actorq.Job("emails.digest", ["ann"], unique_key="digest:ann")
        print("after the period, a new job:", await queue.enqueue(later) == later.id)
        counts = await node.wait_idle(timeout=10.0)
        print("jobs run:", sum(counts.get("default", {}).values()))


asyncio.run(main())

# Output:
# first: 2026-12-01.pdf built
# again, the same job: True
# other arguments: 2026-12-01.csv built
# from a Client, the same job: True
# digest: digest for ann sent
# within the period: True
# after the period, a new job: True
# jobs run: 4
