"""A node in a subprocess for the web examples: what `actorq run --config topology.toml`
does beside a web app in production (its own process, or its own container)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def running_node(workdir: Path, name: str) -> Iterator[tuple[str, str]]:
    """Start a node on a new SQLite journal in `workdir`; yield (journal URL, producer endpoint).

    The node listens for producers on a fixed endpoint (``[producers] endpoint``),
    which is what a web app is configured with. Returns once the endpoint is bound;
    stops the node with SIGTERM (it finishes its in-flight jobs) on leaving.
    """
    url = f"sqlite:///{workdir / 'journal.db'}"
    socket_path = workdir / "producers.sock"
    endpoint = f"ipc://{socket_path}"
    topology = workdir / "topology.toml"
    topology.write_text(f"""
[node]
name = "{name}"
tasks = ["web_demo.tasks:registry"]
log_level = "warning"

[journal]
url = "{url}"

[workers]
processes = 1

[producers]
endpoint = "{endpoint}"
""")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    log = open(workdir / "node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "actorq.node.cli", "run", "--config", str(topology), "--quiet"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start:\n{(workdir / 'node.log').read_text()}")
            time.sleep(0.02)
        yield url, endpoint
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        finally:
            if node.poll() is None:
                node.kill()
            log.close()
