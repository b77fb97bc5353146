"""The web dashboard, served by the node itself.

`[dashboard] bind` makes the node serve one live page (the supervision tree,
queues, jobs with their attempts and errors, leases, schedules; retry, cancel,
pause and resume) and the JSON API behind it (pip install 'actorq[dashboard]':
Starlette and uvicorn). Here the API is read once, as the page reads it every
two seconds. Open the printed address in a browser to see the page; without a
node, `actorq dashboard --config topology.toml` serves the same on a journal.

Run from the repository root:  python examples/16_dashboard.py
"""

import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path

import actorq
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-dashboard-"))
    config = parse_config(
        {
            "node": {"name": "shop", "tasks": ["dashboard_demo.tasks:registry"], "log_level": "error"},
            "journal": {"url": f"sqlite:///{workdir / 'shop.db'}"},
            "workers": {"processes": 1},
            "dashboard": {"bind": "127.0.0.1:0"},  # port 0: any free one (node.dashboard.url)
        },
        source="16_dashboard.py",
        path=HERE / "topology.toml",  # tasks modules are imported relative to this directory
    )
    async with actorq.Node(config) as node:
        for order in (1001, 1002, 1003):
            await node.queue().enqueue(actorq.Job("shop.send_receipt", [order]))
        declined = await node.queue().enqueue(actorq.Job("shop.charge_card", [1002, "4242"]))
        await node.wait_idle(timeout=30)
        url = node.dashboard.url
        print("dashboard at http://127.0.0.1:<port>/:", url.startswith("http://127.0.0.1:"))
        loop = asyncio.get_running_loop()
        view = await loop.run_in_executor(None, get, url + "api/overview")
        tree = view["tree"]
        print("tree:", tree["id"], tree["strategy"], "->", ", ".join(child["id"] for child in tree["children"]))
        print("queue default:", dict(sorted(view["queues"]["default"]["states"].items())))
        dead = await loop.run_in_executor(None, get, url + "api/jobs?state=dead")
        print("dead jobs:", [job["task"] for job in dead["jobs"]], dead["jobs"][0]["id"] == declined)
        detail = await loop.run_in_executor(None, get, url + f"api/jobs/{declined}")
        print("its errors:", [error["error"] for error in detail["errors"]])
    print("node stopped, dashboard closed:", node.dashboard is None)


asyncio.run(main())

# Output:
# dashboard at http://127.0.0.1:<port>/: True
# tree: node one_for_one -> core, workers
# queue default: {'dead': 1, 'succeeded': 3}
# dead jobs: ['shop.charge_card'] True
# its errors: ['ValueError: card ending 4242 was declined for order 1002']
# node stopped, dashboard closed: True
