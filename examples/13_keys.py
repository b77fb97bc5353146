"""Ordering keys and concurrency keys: flow control held in the claim, across every
worker process and node.

Jobs with one `ordering_key` run one at a time, in the order they were enqueued; jobs
of other keys run beside them. At most `concurrency_limit` jobs with one
`concurrency_key` run at once; past that a job waits for a slot, or with
`on_conflict="discard"` is not added (enqueue returns None). The command line does the
same: `actorq enqueue ... --ordering-key customer-42` or `--concurrency-key tenant-7`.

Run from the repository root:  python examples/13_keys.py
"""

import asyncio
import tempfile
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-keys-"))
    config = parse_config(
        {
            "node": {"name": "keys", "tasks": ["keys_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{workdir / 'keys.db'}"},
            "workers": {"processes": 2, "concurrency": 4},
        },
        source="13_keys.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    orders, renders = str(workdir / "orders.txt"), str(workdir / "renders.txt")
    async with actorq.Node(config) as node:
        queue = node.queue()
        # two customers' steps, interleaved; each customer's run in the order given
        steps = ["created", "paid", "packed", "shipped"]
        await queue.enqueue_many([actorq.Job("orders.apply", [orders, customer, step], ordering_key=customer)
                                  for step in steps for customer in ("ann", "bob")])
        # eight renders of one tenant: never more than the task's limit of 2 at once
        await queue.enqueue_many([actorq.Job("reports.render", [renders, n], concurrency_key="tenant-7")
                                  for n in range(8)])
        # the key already has 2 live jobs (and more waiting): a discarding enqueue adds nothing
        dropped = await queue.enqueue(actorq.Job("reports.render", [renders, 99], concurrency_key="tenant-7",
                                                 on_conflict="discard"))
        print("discarded over the limit:", dropped is None)
        counts = await node.wait_idle(timeout=10.0)
        print("jobs run:", sum(counts.get("default", {}).values()))

    lines = Path(orders).read_text().split()
    for customer in ("ann", "bob"):
        print(f"{customer}:", " -> ".join(lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == customer))
    running, most = 0, 0
    for line in Path(renders).read_text().splitlines():  # one file, appended in the order things happened
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    print("never more than 2 renders at once:", most <= 2)


asyncio.run(main())

# Output:
# discarded over the limit: True
# jobs run: 16
# ann: created -> paid -> packed -> shipped
# bob: created -> paid -> packed -> shipped
# never more than 2 renders at once: True
