"""pgqueuer 1.6 on PostgreSQL, as the benchmark runs it.

Set-up (its production shape, sized for 2 cores):

- PostgreSQL 15 with its defaults (``fsync=on``, ``synchronous_commit=on``),
  a database of its own; `setup` runs ``pgq install`` (its default
  ``--durability durable``: every pgqueuer table is logged).
- Workers: 2 processes of ``pgq run pgqueuer_app:create`` (an async entrypoint
  on one asyncpg connection each) with pgqueuer's defaults: ``--batch-size 10``
  jobs fetched per query, no ``--max-concurrent-tasks`` cap, LISTEN/NOTIFY to
  wake the workers; logging at WARNING (its default INFO is for watching a
  worker, not for a benchmark of the queue).
- Producer: the synchronous API, ``SyncQueries(SyncPsycopgDriver(conn))``
  over a psycopg 3 connection in autocommit (what pgqueuer requires);
  ``enqueue("record", b"<i>")`` one job a call, and the list form
  ``enqueue(["record"] * n, payloads, priorities)`` for a batch (one INSERT).

Durability: each ``enqueue`` is one autocommit INSERT into a logged table;
with ``synchronous_commit=on`` its commit waits for the WAL fsync, so an
accepted job is on disk before the producer hears so: class ``fsync``.
(Completions are buffered by the worker before they are written, which can
re-run a finished job after a crash; it does not lose an accepted one.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group  # noqa: E402

import sqlpeer as util  # noqa: E402


# typer pinned: with typer 0.29.2 (what pgqueuer's "typer>=0.15.1" takes today) every `pgq run` dies at
# start ("AttributeError: 'str' object has no attribute 'name'" in logconfig.setup_fancy_logger).
REQUIREMENTS = ["pgqueuer==1.6.0", "asyncpg==0.32.0", "psycopg[binary]==3.3.9", "typer==0.20.0"]


class Pgqueuer(Adapter):
    name = "pgqueuer"
    variants = {"pg": "PostgreSQL, synchronous_commit=on: each enqueue commits (WAL fsync) before it returns"}
    classes = {"pg": "fsync"}
    needs = ("postgresql",)
    storage = "PostgreSQL (fsync=on, synchronous_commit=on), tables logged (durable)"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.workers = []
        self.conn = None

    def _pgq(self, *args: str) -> list[str]:
        return [util.bin_of("pgq"), "--pg-dsn", self.ctx.pg_url, *args]

    def setup(self) -> None:
        if not self.ctx.pg_url:
            raise RuntimeError("pgqueuer needs --pg-url")
        done = subprocess.run(self._pgq("install"), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pgq install failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def connect(self) -> None:
        import psycopg
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.adapters.persistence.queries import SyncQueries

        self.conn = psycopg.connect(self.ctx.pg_url, autocommit=True)
        self.queries = SyncQueries(SyncPsycopgDriver(self.conn))

    def enqueue(self, i: int) -> None:
        self.queries.enqueue("record", str(i).encode())

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        n = len(ids)
        self.queries.enqueue(["record"] * n, [str(i).encode() for i in ids], [0] * n)

    def start_workers(self) -> None:
        env, app = util.worker_env(self.ctx, ["pgqueuer_app.py"])
        cmd = self._pgq("run", "pgqueuer_app:create", "--log-level", "WARNING")
        for n in range(self.ctx.processes):
            self.workers.append(spawn(cmd, env, app, self.ctx.workdir / f"worker{n}.log"))
        util.check_started(self.workers, [self.ctx.workdir / f"worker{n}.log" for n in range(len(self.workers))])

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc)
        self.workers = []

    def remaining(self) -> int:
        return self.conn.execute("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')").fetchone()[0]

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


if __name__ == "__main__":
    main(Pgqueuer)
