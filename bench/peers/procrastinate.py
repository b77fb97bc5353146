"""procrastinate 3 on PostgreSQL, as the benchmark runs it.

Set-up (its production shape, sized for 2 cores):

- PostgreSQL 15 with its defaults (``fsync=on``, ``synchronous_commit=on``),
  a database of its own; `setup` applies procrastinate's schema
  (``app.schema_manager.apply_schema()``, what ``procrastinate schema --apply`` does).
- Connector: ``PsycopgConnector`` (psycopg 3, with its pool); the producer
  uses the app's synchronous side (``app.open()`` then ``record.defer(i=i)``).
- Workers: 2 processes of ``procrastinate --app=procrastinate_app.app worker
  --concurrency=30``, LISTEN/NOTIFY on (the default), logging at WARNING
  (``--log-level=warning``: the default INFO writes two lines per job, which
  a benchmark of the queue should not count). The task is ``async``:
  procrastinate's concurrency page runs async sub-workers
  (``worker --concurrency=30`` is its example) and says not to use concurrency
  for blocking sync tasks; the no-op task blocks nothing.
- Jobs are kept after they ran (the default ``delete_jobs=never``).
- Batched enqueue: ``record.batch_defer(*kwargs)``, one statement per batch.

Durability: ``defer`` returns after the INSERT's transaction committed; with
``synchronous_commit=on`` the commit waits for the WAL fsync, so an accepted
job is on disk before the producer hears so: class ``fsync``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group, load_module  # noqa: E402

import sqlpeer as util  # noqa: E402


REQUIREMENTS = ["procrastinate==3.10.0", "psycopg[binary,pool]==3.3.9"]
CONCURRENCY = 30


class Procrastinate(Adapter):
    name = "procrastinate"
    variants = {"pg": "PostgreSQL, synchronous_commit=on: each defer commits (WAL fsync) before it returns"}
    classes = {"pg": "fsync"}
    needs = ("postgresql",)
    storage = "PostgreSQL (fsync=on, synchronous_commit=on)"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.workers = []
        self.app = None

    def connect(self) -> None:
        if self.app is not None:
            return
        if not self.ctx.pg_url:
            raise RuntimeError("procrastinate needs --pg-url")
        import os

        os.environ[util.PG_ENV] = self.ctx.pg_url
        module = load_module("procrastinate_app")
        self.module = module
        self.app = module.app
        self.app.open()

    def setup(self) -> None:
        self.connect()
        self.app.schema_manager.apply_schema()

    def enqueue(self, i: int) -> None:
        self.module.record.defer(i=i)

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        self.module.record.batch_defer(*({"i": i} for i in ids))

    def start_workers(self) -> None:
        env, app = util.worker_env(self.ctx, ["procrastinate_app.py"])
        cmd = [util.bin_of("procrastinate"), "--app=procrastinate_app.app", "--log-level=warning",
               "worker", f"--concurrency={CONCURRENCY}"]
        for n in range(self.ctx.processes):
            self.workers.append(spawn(cmd, env, app, self.ctx.workdir / f"worker{n}.log"))
        util.check_started(self.workers, [self.ctx.workdir / f"worker{n}.log" for n in range(len(self.workers))])

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc)
        self.workers = []

    def remaining(self) -> int:
        import psycopg

        with psycopg.connect(self.ctx.pg_url) as conn:
            query = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            return conn.execute(query).fetchone()[0]

    def teardown(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None


if __name__ == "__main__":
    main(Procrastinate)
