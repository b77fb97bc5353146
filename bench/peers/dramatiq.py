"""Dramatiq 2 on Redis as a benchmarked peer.

Set-up (what a Dramatiq user deploys on 2 cores):

- broker: ``RedisBroker`` with Dramatiq's default middleware (age limit, time
  limit, shutdown notifications, callbacks, pipelines, retries), the URL from
  ``--redis-url``; the actor sets ``max_retries=0`` so a failure would show as
  a lost job rather than hide behind a delayed retry.
- workers: ``dramatiq dramatiq_app --processes 2 --threads 8``: two worker
  processes (forked by Dramatiq's master) with Dramatiq's default of 8 worker
  threads each; its docs give no other count for short I/O-free tasks (fewer
  threads are suggested only to limit memory or CPU-heavy tasks). Prefetch is
  Dramatiq's default, twice the threads.
- durability: the Redis broker keeps each message in the queue's ``.msgs``
  hash until the actor returned; a fetched message's id moves to its worker's
  ack set, and a worker that stops heartbeating (SIGKILL) has its ack set
  requeued by another worker's maintenance after the heartbeat timeout (60 s
  by default). So an enqueue that returned survives the death of any process:
  class "process" (with Redis's own persistence the harness's other column).
  Delivery is at least once: a job that ran but whose ack did not reach Redis
  runs again.

Producer: ``noop.send(i)``: one Lua-script call (EVALSHA) per job, returned
once Redis replied. Dramatiq has no batch enqueue (``group(...).run()`` sends
its messages one call each), so there is no ``--batch`` row.

Every phase empties its Redis database (FLUSHDB) at set-up and teardown: the
adapter needs a database of its own.

The app module (dramatiq_app.py) is copied into the phase's workdir and the
workers' PYTHONPATH holds it and the harness, not bench/peers, where this
file's name would shadow the ``dramatiq`` package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

import redispeer  # noqa: E402
from peer import Adapter, main, spawn, load_module  # noqa: E402

REQUIREMENTS = ["dramatiq[redis]==2.2.1", "redis==8.1.0"]
THREADS = 8  # Dramatiq's default worker threads per process
NAMESPACE = "dramatiq"  # RedisBroker's default key prefix
QUEUE = "default"


class DramatiqPeer(Adapter):
    name = "dramatiq"
    variants = {"default": "acks after the actor ran; a killed worker's jobs are requeued "
                           "after the heartbeat timeout (60 s)"}
    classes = {"default": "process"}
    needs = ("redis",)
    storage = "Redis (list + message hash + per-worker ack sets)"
    has_batch = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers = []

    def _env(self) -> dict[str, str]:
        if not self.ctx.redis_url:
            raise RuntimeError("dramatiq needs --redis-url")
        env = self.ctx.env(self.appdir)
        env[redispeer.URL_ENV] = self.ctx.redis_url
        return env

    def _redis(self):
        return redispeer.client(self.ctx, self.name)

    def setup(self) -> None:
        self.ctx.app("dramatiq_app.py")  # into self.appdir
        self._redis().flushdb()

    def connect(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self._env()["BENCH_REDIS_URL"]
        module = load_module("dramatiq_app")
        self.actor = module.noop

    def enqueue(self, i: int) -> None:
        self.actor.send(i)

    def start_workers(self) -> None:
        cmd = [sys.executable, "-m", "dramatiq", "dramatiq_app", "--processes", str(self.ctx.processes),
               "--threads", str(THREADS)]
        self.workers.append(spawn(cmd, self._env(), self.appdir, self.ctx.workdir / "worker.log"))

    def stop_workers(self) -> None:
        redispeer.stop(self.workers)
        self.workers = []

    def remaining(self) -> int:
        r = self._redis()
        # a message stays in its queue's .msgs hash from enqueue until its ack
        return sum(r.hlen(f"{NAMESPACE}:{q}.msgs") for q in (QUEUE, f"{QUEUE}.DQ"))

    def teardown(self) -> None:
        if self.ctx.redis_url:
            redispeer.flush(self.ctx, self.name)


if __name__ == "__main__":
    main(DramatiqPeer)
