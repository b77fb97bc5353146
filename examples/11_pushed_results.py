"""Results and cancels pushed to another process: a Client waits in the node, not on a poll.

A client with a node's producer endpoint (``node_endpoint``; on SQLite, the node
serving the file is found by itself) sends its jobs there, and waits there too:
`Client.result` is answered the moment the job's completion commits, and
`Client.cancel` stops a running job at once. (On PostgreSQL a client with no node
is woken by the NOTIFY of the transaction that ended the job.)

Run from the repository root:  python examples/11_pushed_results.py
"""

import asyncio
import tempfile
import time
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


def other_process(url: str, endpoint: str) -> None:
    """What a web app or a script would do (here on a thread, with a client of its own)."""
    with actorq.Client(url, node_endpoint=endpoint) as client:
        job_id = client.enqueue(actorq.Job("results.quote", [["tea", "tea", "cake"]]))
        print("result:", client.result(job_id, timeout=10.0))  # the node answers when it commits
        long_id = client.enqueue(actorq.Job("results.long"))
        while client.get(long_id).state != "leased":  # until a worker runs it
            time.sleep(0.01)
        print("cancelled now:", client.cancel(long_id))  # the node stops it at once
        try:
            client.result(long_id, timeout=10.0)
        except actorq.JobFailed as failed:
            print("then:", failed.state)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-push-"))
    url = f"sqlite:///{workdir / 'push.db'}"
    endpoint = f"ipc://{workdir / 'producers.sock'}"
    config = parse_config(
        {
            "node": {"name": "push", "tasks": ["results_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": url},
            "workers": {"processes": 1, "concurrency": 4},
            "producers": {"endpoint": endpoint},  # a fixed endpoint other processes are given
        },
        source="11_pushed_results.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        await asyncio.to_thread(other_process, url, endpoint)
        server = node.runtime.producers
        print("waits the node answered with the job's end:", server.outcomes)
    print("node stopped cleanly")


asyncio.run(main())

# Output:
# result: {'total': 10, 'items': 3}
# cancelled now: True
# then: cancelled
# waits the node answered with the job's end: 2
# node stopped cleanly
