"""FastAPI with the async client: request handlers enqueue jobs, and one waits for a result.

The web app and the node are two processes. The app holds one `actorq.AsyncClient`
(opened in its lifespan, closed at shutdown), configured with the node's producer
endpoint; its calls run on a thread of the client, so the event loop keeps serving
other requests while a call waits. A handler either enqueues and answers at once
(202 with the job id: the job is committed, the node will run it), or enqueues and
waits for the value (`ask`: the enqueue, then the wait, pushed by the node when
the job's completion commits, under one deadline).

Needs ``pip install 'actorq[integrations]'`` (FastAPI, uvicorn). Run from the
repository root:  python examples/17_fastapi_client.py
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
from web_demo.node import running_node


def create_app(url: str, endpoint: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # one client per process, shared by every request; created inside the serving process
        async with actorq.AsyncClient(url, node_endpoint=endpoint, timeout=10.0) as client:
            app.state.jobs = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/quotes")
    async def quote(request: Request, body: dict) -> dict:
        """Waits for the job: for work the answer needs (keep it short: the request holds on)."""
        jobs: actorq.AsyncClient = request.app.state.jobs
        return await jobs.ask(actorq.Job("shop.quote", [body["items"]]), timeout=10.0)

    @app.post("/orders/{order}/receipt", status_code=202)
    async def send_receipt(order: int, request: Request, body: dict) -> dict:
        """Does not wait: the job is committed when this returns, and runs in the node."""
        job_id = await request.app.state.jobs.enqueue(actorq.Job("shop.receipt", [order, body["email"]]))
        return {"job": job_id}

    return app


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-fastapi-"))
    with running_node(workdir, "shop") as (url, endpoint):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))  # any free port
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(create_app(url, endpoint), log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            if serving.done():  # it failed to start (the error is logged)
                raise SystemExit(1)
            await asyncio.sleep(0.01)
        status, quote = await asyncio.to_thread(post, base, "/quotes", {"items": ["tea", "cake", "scone"]})
        print("POST /quotes:", status, quote)
        status, accepted = await asyncio.to_thread(post, base, "/orders/1001/receipt", {"email": "ann@example.com"})
        print("POST /orders/1001/receipt:", status, sorted(accepted))
        server.should_exit = True
        await serving
        # any process can fetch a result later by id, for as long as results are kept
        with actorq.Client(url, node_endpoint=endpoint) as client:
            print("the receipt job:", await asyncio.to_thread(client.result, accepted["job"], 10.0))
    print("app and node stopped")


asyncio.run(main())

# Output:
# POST /quotes: 200 {'total': 9, 'items': 3}
# POST /orders/1001/receipt: 202 ['job']
# the receipt job: receipt for order 1001 sent to ann@example.com
# app and node stopped
