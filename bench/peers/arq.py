"""arq on Redis as a benchmarked peer.

Set-up (what an arq user deploys on 2 cores):

- workers: two ``arq arq_app.WorkerSettings`` processes (arq's worker is one
  asyncio process; two make use of 2 cores), with arq's defaults: ``max_jobs``
  10 concurrent jobs per worker, ``poll_delay`` 0.5 s (a worker that found the
  queue empty looks again after half a second, so latency at low rates is
  arq's polling), results kept 1 h, ``max_tries`` 5.
- jobs: ``ArqRedis.enqueue_job("noop", i)``: WATCH + EXISTS, then MULTI/EXEC
  (job key + ZADD to the queue), returned once Redis replied. The adapter's
  ``enqueue`` is synchronous, so each call runs that coroutine on its own
  event loop (``loop.run_until_complete``): a few tens of microseconds a job
  that an asyncio producer would not pay.
- throughput: arq's worker reads the queue in rounds: it reads up to
  ``queue_read_limit`` ids (100 with these defaults), starts them while fewer
  than ``max_jobs`` run, then sleeps what is left of ``poll_delay``. So a
  worker starts at most 100 jobs per half second (200 jobs/s, 400 for the
  two) however short the jobs are, and fewer when ``max_jobs`` is reached
  inside a round: arq's default ceiling, kept as deployed.
- durability: a job stays in the queue's sorted set until it finished (arq
  runs jobs "pessimistically"): a worker marks it with an in-progress key
  that expires after the job timeout + 10 s (310 s by default), and a job
  whose worker was SIGKILLed runs again once that key expired. Class
  "process": nothing the producer was told is accepted is lost when any
  process dies (the Redis server's own persistence is the harness's other
  column). Delivery is at least once.
- batch: arq has no batch enqueue (one ``enqueue_job`` per job), so no
  ``--batch`` row.

Every phase empties its Redis database (FLUSHDB) at set-up and teardown: the
adapter needs a database of its own.

The settings module (arq_app.py) is copied into the phase's workdir and the
workers' PYTHONPATH holds it and the harness, not bench/peers, where this
file's name would shadow the ``arq`` package.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

import redispeer  # noqa: E402
from peer import Adapter, main, spawn  # noqa: E402

REQUIREMENTS = ["arq==0.28.0", "redis[hiredis]==5.3.1", "hiredis==3.5.0"]
QUEUE = "arq:queue"  # arq's default queue: a sorted set of job ids


class ArqPeer(Adapter):
    name = "arq"
    variants = {"default": "a job leaves Redis after it ran; a killed worker's job reruns once its "
                           "in-progress key expired (job timeout + 10 s)"}
    classes = {"default": "process"}
    needs = ("redis",)
    storage = "Redis (job keys + sorted-set queue)"
    has_batch = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers = []
        self.loop = None

    def _redis(self):
        return redispeer.client(self.ctx, self.name)

    def setup(self) -> None:
        self.ctx.app("arq_app.py")  # into self.appdir
        self._redis().flushdb()

    def connect(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self._redis()  # checks the URL is given
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(self.ctx.redis_url)))

    def enqueue(self, i: int) -> None:
        if self.loop.run_until_complete(self.pool.enqueue_job("noop", i)) is None:
            raise RuntimeError(f"arq refused job {i} (a job with its id exists)")

    def start_workers(self) -> None:
        env = self.ctx.env(self.appdir)
        env[redispeer.URL_ENV] = self.ctx.redis_url
        for n in range(self.ctx.processes):
            cmd = [sys.executable, "-m", "arq", "arq_app.WorkerSettings"]
            self.workers.append(spawn(cmd, env, self.appdir, self.ctx.workdir / f"worker{n}.log"))

    def stop_workers(self) -> None:
        redispeer.stop(self.workers)
        self.workers = []

    def remaining(self) -> int:
        return self._redis().zcard(QUEUE)

    def teardown(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()
            self.loop = None
        if self.ctx.redis_url:
            redispeer.flush(self.ctx, self.name)


if __name__ == "__main__":
    main(ArqPeer)
