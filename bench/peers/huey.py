"""Huey 3 as a benchmarked peer: SQLite (``SqliteHuey``) and Redis (``RedisHuey``).

Set-up (what a Huey user deploys on 2 cores):

- workers: Huey's own consumer, ``huey_consumer huey_app.huey -k process -w 2
  -q``: two worker processes forked by the consumer (process workers, as
  Huey's docs suggest for using more than one core), its default polling
  (``-d 0.1``, backoff 1.15, at most 10 s between polls of an empty SQLite
  queue; RedisHuey blocks in BRPOP instead of polling), WARNING logs (at its
  default INFO level it logs two lines per task).
- producer: ``noop(i)``: one ``storage.enqueue`` per call (SQLite: one
  committed INSERT; Redis: one LPUSH). Huey has no batch enqueue (``map``
  enqueues one call each), so there is no ``--batch`` row.
- storage, ``sqlite``: ``SqliteHuey(journal_mode="wal", fsync=True)``: every
  connection runs ``pragma synchronous=2`` (FULL), so an enqueue is fsync'd in
  the WAL before it returns. ``redis``: the server's persistence (the harness
  runs it against AOF everysec and no persistence).
- delivery: a worker's dequeue deletes the task (SQLite: DELETE in the
  dequeue's transaction; Redis: BRPOP) before it runs, so a worker killed
  while running a task loses it (at most once). Hence class ``none`` for both
  variants, as Celery's acks-early: what a crash can lose includes a job the
  producer was told is accepted. A no-op task returning None stores no
  result, so a completion writes nothing.

``huey_app.py`` is copied into the phase's workdir; the workers' PYTHONPATH
holds it and the harness, never bench/peers, where this file's name would
shadow the ``huey`` package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

_PEERS = Path(__file__).resolve().parent
sys.path.insert(0, str(_PEERS.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group, load_module  # noqa: E402

REQUIREMENTS = ["huey==3.5.4", "redis==8.1.0"]
STOP_WAIT = 10.0  # seconds a graceful stop (SIGINT: finish running tasks) may take
LOST_ON_KILL = "; a task leaves the queue when a worker takes it: a killed worker's running task is lost"


class HueyPeer(Adapter):
    name = "huey"
    variants = {
        "sqlite": "SqliteHuey WAL, synchronous=FULL: one fsync'd commit per enqueue and per dequeue" + LOST_ON_KILL,
        "redis": "RedisHuey: LPUSH per enqueue, BRPOP per dequeue" + LOST_ON_KILL,
    }
    classes = {"sqlite": "none", "redis": "none"}
    variant_needs = {"sqlite": (), "redis": ("redis",)}
    storage = "SQLite WAL, synchronous=FULL"  # the redis variant: the harness shows the server's mode
    has_batch = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.appdir = ctx.workdir / "app"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.huey = None
        self.noop = None

    def _settings(self) -> dict[str, str]:
        if self.ctx.variant == "redis":
            if not self.ctx.redis_url:
                raise RuntimeError("huey redis needs --redis-url")
            return {"BENCH_HUEY_KIND": "redis", "BENCH_REDIS_URL": self.ctx.redis_url}
        return {"BENCH_HUEY_KIND": "sqlite", "BENCH_HUEY_DB": str(self.ctx.workdir / "huey.db")}

    def _env(self) -> dict[str, str]:
        env = self.ctx.env(self.appdir)
        env.update(self._settings())
        return env

    def setup(self) -> None:
        self.ctx.app("huey_app.py")  # into self.appdir

    def connect(self) -> None:
        os.environ.update(self._settings())
        module = load_module("huey_app")  # SqliteHuey creates its tables here
        self.huey, self.noop = module.huey, module.noop

    def enqueue(self, i: int) -> None:
        self.noop(i)

    def start_workers(self) -> None:
        cmd = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_app.huey", "-k", "process",
               "-w", str(self.ctx.processes), "-q"]
        self.workers.append(spawn(cmd, self._env(), self.appdir, self.ctx.workdir / "consumer.log"))

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # graceful: the consumer lets running tasks finish
                try:
                    proc.wait(STOP_WAIT)
                except subprocess.TimeoutExpired:
                    pass
            stop_group(proc, wait=5.0)
        self.workers = []

    def remaining(self) -> int:
        return self.huey.pending_count()

    def teardown(self) -> None:
        if self.huey is not None:
            if self.ctx.variant == "redis":
                self.huey.flush()
            self.huey.storage.close()


if __name__ == "__main__":
    main(HueyPeer)
