"""Hooks around each job, node events, and the Prometheus endpoint.

The task registry's hooks run in the worker around each attempt
(`@registry.before`, `@registry.after`, `@registry.on_failure`, or middleware
objects); one that raises is logged and counted, and the job goes on. Node
events (enqueued, started, succeeded, retried, failed, dead, ...) go to
`node.on(...)` hooks on a thread of their own, after the journal stored them.
`[metrics] bind` serves /metrics through prometheus-client
(pip install 'actorq[metrics]'); here it is scraped and parsed.

Run from the repository root:  python examples/14_hooks_and_metrics.py
"""

import asyncio
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


def scrape(host: str, port: int) -> dict[tuple[str, str], float]:
    """GET /metrics; {(sample name, its state or queue label): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {(s.name, s.labels.get("state", s.labels.get("queue", ""))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if "le" not in s.labels}


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-hooks-"))
    config = parse_config(
        {
            "node": {"name": "hooks", "tasks": ["hooks_demo.tasks:registry"], "log_level": "error"},
            "journal": {"url": f"sqlite:///{workdir / 'hooks.db'}"},
            "workers": {"processes": 1},
            "metrics": {"bind": "127.0.0.1:0"},  # port 0: any free one (node.metrics.address)
        },
        source="14_hooks_and_metrics.py",
        path=HERE / "topology.toml",  # tasks modules are imported relative to this directory
    )
    events: dict[str, list[str]] = defaultdict(list)
    node = actorq.Node(config)
    node.on("*", lambda event: events[event.job_id].append(event.kind))  # on the node's hook thread
    async with node:
        queue = node.queue()
        print(await queue.ask(actorq.Job("hooks.greet", ["ada"]), timeout=30))
        flaky = await queue.enqueue(actorq.Job("hooks.flaky"))
        broken = await queue.enqueue(actorq.Job("hooks.broken"))
        await node.wait_idle(timeout=60)
        metrics = await asyncio.get_running_loop().run_in_executor(None, scrape, *node.metrics.address)
        for name, label in [("actorq_jobs", "succeeded"), ("actorq_jobs", "dead"),
                            ("actorq_jobs_enqueued_total", ""), ("actorq_jobs_succeeded_total", ""),
                            ("actorq_jobs_retried_total", ""), ("actorq_jobs_dead_total", ""),
                            ("actorq_job_run_seconds_count", "default")]:
            print(f"{name}{'{' + label + '}' if label else ''} = {metrics[name, label]:g}")
    # stop() handed the hooks every event before it returned
    print("flaky:", ", ".join(events[flaky]))
    print("broken:", ", ".join(events[broken]))


asyncio.run(main())

# Output:
# hello ada, in span hooks.greet#1
# actorq_jobs{succeeded} = 2
# actorq_jobs{dead} = 1
# actorq_jobs_enqueued_total = 3
# actorq_jobs_succeeded_total = 2
# actorq_jobs_retried_total = 1
# actorq_jobs_dead_total = 1
# actorq_job_run_seconds_count{default} = 4
# flaky: enqueued, started, retried, started, succeeded
# broken: enqueued, started, dead
