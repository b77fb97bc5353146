"""Celery 5 on Redis, prefork pool, as a benchmarked peer.

Set-up (what a Celery user deploys on 2 cores):

- broker: Redis (kombu's Redis transport), the URL from ``--redis-url``; no
  result backend (``task_ignore_result``): the no-op task returns nothing.
- worker: one ``celery -A celery_app worker --pool prefork --concurrency 2
  --loglevel WARNING``: Celery's default pool, a main process that consumes
  from Redis and hands tasks to two forked child processes that run them;
  WARNING so the log is not written once per task. Mingle, gossip and
  heartbeats are left on (Celery's defaults).
- prefetch: ``worker_prefetch_multiplier = 64``, as Celery's optimizing guide
  advises for many short tasks ("you want this number to be large, say 64 or
  128"); the default is 4.
- variant ``acks_late``: ``task_acks_late=True`` and
  ``task_reject_on_worker_lost=True``, Celery's documented at-least-once set-up:
  a message stays in kombu's ``unacked`` hash until its task has returned, and a
  killed worker's messages go back to the queue when the visibility timeout
  (1 h by default) expires. Class "process": nothing the producer was told is
  accepted is lost when any process dies (the Redis server's own persistence
  is the harness's other column).
- variant ``acks_early``: Celery's default: a message is acknowledged (deleted
  from Redis) just before its task starts, so the task running when a worker
  is SIGKILLed is gone. Class "none".

Producer: ``noop.apply_async((i,))``: one LPUSH round trip per job, returned
once Redis replied.

Batch: ``group(...).apply_async()`` is not a batch: Celery's
``group._apply_tasks`` calls ``apply_async`` once per task, and each publish is
its own LPUSH round trip (no pipeline). Kombu 5.7 added ``Producer.batch()``,
which buffers the publishes of its block into one non-transactional Redis
pipeline (kombu.transport.redis.PublishBatch) and sends it on exit; that is
the batch path used here (``apply_async(producer=p)`` inside
``p.batch()``): one round trip per ``--batch`` jobs. Not atomic: a crash mid-pipeline can
store a prefix of the batch.

Every phase empties its Redis database (FLUSHDB) at set-up and teardown: the
adapter needs a database of its own.

The app module (celery_app.py) is copied into the phase's workdir and the
workers' PYTHONPATH holds it and the harness, not bench/peers, where this
file's name would shadow the ``celery`` package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

import redispeer  # noqa: E402
from peer import Adapter, main, spawn, load_module  # noqa: E402

REQUIREMENTS = ["celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0"]
QUEUE = "celery"  # Celery's default queue: a Redis list of that name


def _load_app(appdir: Path):
    return load_module("celery_app", appdir)


class CeleryPeer(Adapter):
    name = "celery"
    variants = {
        "acks_late": "acks late + reject on worker lost: a job leaves Redis after it ran; "
                     "a killed worker's jobs return after the visibility timeout (1 h)",
        "acks_early": "acks early (default): a job leaves Redis when a worker starts it; "
                      "a killed worker's running job is lost",
    }
    classes = {"acks_late": "process", "acks_early": "none"}
    needs = ("redis",)
    storage = "Redis (kombu list + unacked hash)"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers = []

    def _env(self) -> dict[str, str]:
        if not self.ctx.redis_url:
            raise RuntimeError("celery needs --redis-url")
        env = self.ctx.env(self.appdir)
        env[redispeer.URL_ENV] = self.ctx.redis_url
        env["BENCH_VARIANT"] = self.ctx.variant
        return env

    def _redis(self):
        return redispeer.client(self.ctx, self.name)

    def setup(self) -> None:
        self.ctx.app("celery_app.py")  # into self.appdir
        self._redis().flushdb()

    def connect(self) -> None:
        os.environ.update({k: v for k, v in self._env().items() if k.startswith("BENCH_")})
        app_py = self.appdir / "celery_app.py"
        self.mod = _load_app(self.appdir if app_py.exists() else _PEERS)
        self.task = self.mod.noop

    def enqueue(self, i: int) -> None:
        self.task.apply_async((i,))

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        with self.mod.app.producer_or_acquire() as producer:
            with producer.batch(max_size=4 * len(ids) + 16):
                for i in ids:
                    self.task.apply_async((i,), producer=producer)

    def start_workers(self) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
               "--concurrency", str(self.ctx.processes), "--loglevel", "WARNING",
               "--hostname", f"bench@{os.uname().nodename}"]
        self.workers.append(spawn(cmd, self._env(), self.appdir, self.ctx.workdir / "worker.log"))

    def stop_workers(self) -> None:
        redispeer.stop(self.workers)
        self.workers = []

    def remaining(self) -> int:
        r = self._redis()
        queued = sum(r.llen(k) for k in r.scan_iter(match=QUEUE + "*", _type="list"))
        return queued + r.hlen("unacked")

    def teardown(self) -> None:
        if self.ctx.redis_url:
            redispeer.flush(self.ctx, self.name)


if __name__ == "__main__":
    main(CeleryPeer)
