"""Queue figures: each queue's jobs per state, and what it did over the last minute.

The journal keeps these as jobs move (a few rows per queue, whatever the number of jobs),
so reading them costs the same at ten jobs or ten million. `Client.counts()` gives the jobs
per queue and state; `Client.queue_stats(window)` what each queue did over the last `window`
seconds, every node's work together: jobs finished and failed, leases, and the queue wait
of those leases (from due to leased, a mean and the longest). `actorq queues list`,
`actorq status`, the dashboard and the metrics show the same figures.

Run from the repository root:  python examples/22_queue_stats.py
"""

import asyncio
import tempfile
import time
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-stats-"))
    url = f"sqlite:///{workdir / 'stats.db'}"
    config = parse_config(
        {
            "node": {"name": "stats", "tasks": ["lifecycle.lifecycle_tasks:registry"], "log_level": "warning"},
            "journal": {"url": url},
            "workers": {"processes": 1, "queues": ["default", "emails"]},
        },
        source="22_queue_stats.py",
        path=HERE / "topology.toml",
    )
    async with actorq.Node(config) as node:
        # the emails wait in a paused queue for a while: that time is their queue wait
        await node.pause_queue("emails")
        await node.queue("emails").enqueue_many([actorq.Job("lifecycle.send", [f"user{i}@example.com"])
                                                 for i in range(4)])
        await node.queue("default").enqueue_many([actorq.Job("lifecycle.export", [n]) for n in range(6)])
        paused_at = time.monotonic()
        while (await node.counts()).get("default", {}).get("succeeded") != 6:
            await asyncio.sleep(0.02)
        await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - paused_at)))
        await node.resume_queue("emails")
        await node.wait_idle(timeout=60)

    with actorq.Client(url) as client:
        print("counts:", client.counts())
        stats = client.queue_stats(60)
        for queue, figures in sorted(stats.items()):
            print(f"{queue}: finished {figures.finished}, failed {figures.failed}, leased {figures.leased}")
        emails, default = stats["emails"], stats["default"]
        print("emails waited 0.5 s or more on average:", emails.wait_mean >= 0.5)
        print("emails waited longer than any default job:", emails.wait_mean > default.wait_max)


asyncio.run(main())

# Output:
# counts: {'default': {'succeeded': 6}, 'emails': {'succeeded': 4}}
# default: finished 6, failed 0, leased 6
# emails: finished 4, failed 0, leased 4
# emails waited 0.5 s or more on average: True
# emails waited longer than any default job: True
