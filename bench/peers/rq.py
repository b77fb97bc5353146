"""RQ on Redis as a benchmarked peer.

Set-up (what an RQ user deploys on 2 cores):

- workers: ``rq worker-pool -n 2 --url URL --quiet default``: RQ's pool of
  two workers of the default class ``rq.Worker``, which forks a work horse per
  job (RQ's default, isolating each job in its own process); ``--quiet`` (log
  level WARNING) so the log is not written twice per job.
- jobs: ``Queue.enqueue("rq_app.noop", i, retry=Retry(max=3))``, one MULTI/EXEC
  pipeline (job hash + queue push) per job, returned once Redis replied.
  Results are RQ's default (kept ``result_ttl`` = 500 s).
- durability: a worker moves a job id from the queue to an intermediate list
  (BLMOVE) and then into its started-job registry, and deletes nothing before
  the job finished. When a worker is SIGKILLed, the registry's cleanup finds
  the job abandoned once its heartbeat lapses; without ``Retry`` RQ moves it to
  the failed-job registry, where it waits for a person to requeue it (it never
  runs again by itself); with ``Retry(max=3)``, RQ's documented way to have
  it rerun, it is requeued. That is the variant here, class "process": nothing
  the producer was told is accepted is lost when any process dies (the Redis
  server's own persistence is the harness's other column).
- batch: ``Queue.enqueue_many([Queue.prepare_data(...) ...], pipeline=p)`` and
  ``p.execute()``: one MULTI/EXEC round trip per ``--batch`` jobs.

Every phase empties its Redis database (FLUSHDB) at set-up and teardown: the
adapter needs a database of its own.

The task module (rq_app.py) is copied into the phase's workdir and the
workers' PYTHONPATH holds it and the harness, not bench/peers, where this
file's name would shadow the ``rq`` package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

import redispeer  # noqa: E402
from peer import Adapter, main, spawn  # noqa: E402

REQUIREMENTS = ["rq==3.0.0", "redis==8.1.0"]
QUEUE = "default"
TASK = "rq_app.noop"
RETRIES = 3


class RQPeer(Adapter):
    name = "rq"
    variants = {"retry": "a job leaves the queue when a worker takes it but stays registered until it "
                         "finished; Retry(max=3) requeues a killed worker's job once its heartbeat lapses"}
    classes = {"retry": "process"}
    needs = ("redis",)
    storage = "Redis (job hashes + list + started-job registry)"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers = []

    def _redis(self):
        return redispeer.client(self.ctx, self.name)

    def setup(self) -> None:
        self.ctx.app("rq_app.py")  # into self.appdir
        self._redis().flushdb()

    def connect(self) -> None:
        from rq import Queue, Retry

        self.queue = Queue(QUEUE, connection=self._redis())
        self.retry = Retry(max=RETRIES)

    def enqueue(self, i: int) -> None:
        self.queue.enqueue(TASK, i, retry=self.retry)

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        from rq import Queue

        with self.queue.connection.pipeline() as pipe:
            self.queue.enqueue_many([Queue.prepare_data(TASK, (i,), retry=self.retry) for i in ids], pipeline=pipe)
            pipe.execute()

    def start_workers(self) -> None:
        env = self.ctx.env(self.appdir)
        cmd = [sys.executable, "-m", "rq.cli", "worker-pool", "-n", str(self.ctx.processes),
               "--url", self.ctx.redis_url, "--quiet", QUEUE]
        self.workers.append(spawn(cmd, env, self.appdir, self.ctx.workdir / "worker.log"))

    def stop_workers(self) -> None:
        redispeer.stop(self.workers)
        self.workers = []

    def remaining(self) -> int:
        q = self.queue
        r = q.connection
        return len(q) + r.llen(q.intermediate_queue_key) + q.started_job_registry.count

    def teardown(self) -> None:
        if self.ctx.redis_url:
            redispeer.flush(self.ctx, self.name)


if __name__ == "__main__":
    main(RQPeer)
