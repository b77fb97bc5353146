"""FastAPI with a node embedded in its lifespan: one process serves requests and runs jobs.

The app starts an `actorq.Node` when it starts and stops it when it stops
(finishing the jobs in flight); handlers enqueue through the node's queue ref,
with no client and no socket between them: `enqueue` returns once the job is
committed, `ask` also waits for its value, pushed when its completion commits.
The node's worker processes run the tasks, so a slow task never blocks the app's
event loop. Fits a single-process deployment; with several app processes, run the
node on its own and use the client (examples/17_fastapi_client.py).

Needs ``pip install 'actorq[integrations]'`` (FastAPI, uvicorn). Run from the
repository root:  python examples/18_fastapi_lifespan.py
"""

import asyncio
import contextlib
import socket
import tempfile
from pathlib import Path
from typing import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request

import actorq
from web_demo.http import post
from actorq.node.config import parse_config

HERE = Path(__file__).resolve().parent


def create_app(journal: Path) -> FastAPI:
    config = parse_config(
        {
            "node": {"name": "shop", "tasks": ["web_demo.tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{journal}"},
            "workers": {"processes": 1},
        },
        source="18_fastapi_lifespan.py",
        path=HERE / "topology.toml",  # task modules are imported relative to this directory
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with actorq.Node(config) as node:  # started before the first request, stopped after the last
            app.state.queue = node.queue()
            yield
        print("node stopped with the app")

    app = FastAPI(lifespan=lifespan)

    @app.post("/quotes")
    async def quote(request: Request, body: dict) -> dict:
        """Waits for the job's value (the node pushes it when the job ends)."""
        return await request.app.state.queue.ask(actorq.Job("shop.quote", [body["items"]]), timeout=10.0)

    @app.post("/orders/{order}/receipt", status_code=202)
    async def send_receipt(order: int, request: Request, body: dict) -> dict:
        """Answers once the job is committed; the node's workers run it."""
        return {"job": await request.app.state.queue.enqueue(actorq.Job("shop.receipt", [order, body["email"]]))}

    return app


async def main() -> None:
    journal = Path(tempfile.mkdtemp(prefix="actorq-lifespan-")) / "shop.db"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # any free port
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(journal), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:  # set once the lifespan (and so the node) has started
        if serving.done():  # it failed to start (the error is logged)
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    status, quote = await asyncio.to_thread(post, base, "/quotes", {"items": ["cake", "cake"]})
    print("POST /quotes:", status, quote)
    status, accepted = await asyncio.to_thread(post, base, "/orders/1002/receipt", {"email": "bob@example.com"})
    print("POST /orders/1002/receipt:", status, sorted(accepted))
    # any client on the journal reads a result by id (in the node's own process, it reads the file)
    with actorq.Client(f"sqlite:///{journal}") as client:
        print("the receipt job:", await asyncio.to_thread(client.result, accepted["job"], 10.0))
    server.should_exit = True
    await serving


asyncio.run(main())

# Output:
# POST /quotes: 200 {'total': 8, 'items': 2}
# POST /orders/1002/receipt: 202 ['job']
# the receipt job: receipt for order 1002 sent to bob@example.com
# node stopped with the app
