"""Retries: which errors are retried (retry_on, PermanentError), Retry(delay=...), and backoff kinds.

Run from the repository root:  python examples/08_retries.py
"""

import asyncio
import tempfile
import time
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-retries-"))
    url = f"sqlite:///{workdir / 'retries.db'}"
    config = parse_config(
        {
            "node": {"name": "retries", "tasks": ["retries_demo.tasks:registry"], "log_level": "error"},
            "journal": {"url": url},
            "workers": {"processes": 1, "concurrency": 4},
        },
        source="08_retries.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        queue = node.queue()
        charges = [await queue.enqueue(actorq.Job("retries.charge", [card]))
                   for card in ("4242", "malformed", "declined")]
        later = [await queue.enqueue(actorq.Job("retries.poll", ["feed.example"])),
                 await queue.enqueue(actorq.Job("retries.sync", ["acme"]))]
        with actorq.Client(url) as client:
            # wait_idle would wait for the retries too (an hour): watch the states instead
            while not (all(client.get(j).state in ("succeeded", "failed") for j in charges)
                       and all(client.get(j).state == "retry" for j in later)):
                await asyncio.sleep(0.05)
            for job_id in charges:
                info = client.get(job_id)
                print(f"charge: {info.state}, attempts {info.attempts}, errors {info.errors}")
            for job_id in later:
                info = client.get(job_id)
                minutes = round((info.run_at - time.time()) / 60)
                print(f"{info.task}: {info.state}, next attempt in {minutes} min, errors {info.errors}")
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# charge: succeeded, attempts 3, errors ['ConnectionError: the bank did not answer', 'ConnectionError: the bank did not answer']
# charge: failed, attempts 1, errors ["ValueError: card 'malformed' is not a card number"]
# charge: failed, attempts 1, errors ["CardDeclined: card 'declined' was declined"]
# retries.poll: retry, next attempt in 60 min, errors ['Retry: feed.example said: come back in an hour (retry in 3600 s)']
# retries.sync: retry, next attempt in 10 min, errors ['TimeoutError: the CRM did not answer for acme']
# node stopped cleanly
