"""Flask with the sync client: views enqueue jobs, and one waits for a result.

The web app and the node are two processes. The app holds one `actorq.Client`
(thread-safe: Flask's threads share it), configured with the node's producer
endpoint. `enqueue` returns once the job is committed (by the node's own group
commit); `result` blocks the request's thread until the node pushes the job's end,
so keep such waits short, and use it for work the answer needs.

Needs ``pip install 'actorq[integrations]'`` (Flask). Run from the repository
root:  python examples/20_flask_client.py
"""

import logging
import tempfile
import threading
from pathlib import Path

from flask import Flask, request
from werkzeug.serving import make_server

import actorq
from web_demo.http import post
from web_demo.node import running_node


def create_app(client: actorq.Client) -> Flask:
    app = Flask(__name__)

    @app.post("/quotes")
    def quote() -> dict:
        """Waits for the job (blocking this request's thread, not the others)."""
        job_id = client.enqueue(actorq.Job("shop.quote", [request.get_json()["items"]]))
        return client.result(job_id, timeout=10.0)

    @app.post("/orders/<int:order>/receipt")
    def send_receipt(order: int) -> tuple[dict, int]:
        """Does not wait: 202 once the job is committed; the node runs it."""
        return {"job": client.enqueue(actorq.Job("shop.receipt", [order, request.get_json()["email"]]))}, 202

    return app


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines in the output
    workdir = Path(tempfile.mkdtemp(prefix="actorq-flask-"))
    with running_node(workdir, "shop") as (url, endpoint):
        # one client per process (create it after any fork, e.g. in gunicorn's post_fork)
        with actorq.Client(url, node_endpoint=endpoint, timeout=10.0) as client:
            server = make_server("127.0.0.1", 0, create_app(client), threaded=True)  # port 0: any free one
            serving = threading.Thread(target=server.serve_forever)
            serving.start()
            base = f"http://127.0.0.1:{server.server_port}"
            status, quote = post(base, "/quotes", {"items": ["scone", "tea"]})
            print("POST /quotes:", status, quote)
            status, accepted = post(base, "/orders/1003/receipt", {"email": "cy@example.com"})
            print("POST /orders/1003/receipt:", status, sorted(accepted))
            print("the receipt job:", client.result(accepted["job"], timeout=10.0))
            server.shutdown()
            serving.join()
    print("app and node stopped")


main()

# Output:
# POST /quotes: 200 {'items': 2, 'total': 5}
# POST /orders/1003/receipt: 202 ['job']
# the receipt job: receipt for order 1003 sent to cy@example.com
# app and node stopped
