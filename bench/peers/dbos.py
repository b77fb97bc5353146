"""DBOS Transact queues, as the benchmark runs them.

Set-up (its production shape, sized for 2 cores):

- System database: PostgreSQL 15 with its defaults (``fsync=on``,
  ``synchronous_commit=on``), a database of its own (variant ``pg``); or a
  SQLite file, which DBOS opens with SQLite's defaults (rollback journal,
  ``synchronous=FULL``, IMMEDIATE transactions) (variant ``sqlite``).
  `setup` creates DBOS's tables with ``dbos migrate -s URL`` so the two
  workers do not race to make them.
- Workers: 2 processes of ``python dbos_app.py``: each calls
  ``DBOS.launch()`` and ``DBOS.register_queue("bench")`` with its defaults (no
  concurrency limit, polling every 1 s) and runs until SIGTERM; each has an
  executor id of its own (``executor_id`` = ``worker0``, ``worker1``), as a
  deployment of several processes on one system database needs, so that a
  process's start-up recovery never takes the other's workflows. Every DBOS
  process dequeues from every queue it registered.
- The job is a workflow (``@DBOS.workflow(name="record")``) whose body records
  the run; it has no steps, so each job costs DBOS its workflow rows and no
  step checkpoints.
- Producer: ``DBOSClient(system_database_url=URL, application_name="bench")``
  and ``client.enqueue({"queue_name": "bench", "workflow_name": "record"}, i)``,
  DBOS's documented way to enqueue from a process outside the application.
  DBOS has no batch enqueue of workflows, so ``--batch`` is not offered.

Durability: ``enqueue`` returns after the transaction that inserts the
ENQUEUED workflow row committed: on PostgreSQL with ``synchronous_commit=on``
that commit waits for the WAL fsync; on SQLite with ``synchronous=FULL`` the
commit fsyncs the journal and the database. Both: class ``fsync``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group  # noqa: E402

import sqlpeer as util  # noqa: E402


REQUIREMENTS = ["dbos==3.4.0"]
APP = "bench"  # as in dbos_app.py
QUEUE = "bench"
WORKFLOW = "record"


class Dbos(Adapter):
    name = "dbos"
    variants = {
        "pg": "PostgreSQL system database, synchronous_commit=on: each enqueue commits (WAL fsync) before it returns",
        "sqlite": "SQLite system database (rollback journal, synchronous=FULL): each enqueue commits with fsync",
    }
    classes = {"pg": "fsync", "sqlite": "fsync"}
    needs = ("postgresql",)
    variant_needs = {"sqlite": ()}  # its SQLite variant needs no server
    storage = "DBOS system database: PostgreSQL (fsync=on, synchronous_commit=on) or SQLite (synchronous=FULL)"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.workers = []
        self.client = None

    @property
    def url(self) -> str:
        if self.ctx.variant == "sqlite":
            return f"sqlite:///{Path(self.ctx.workdir).resolve() / 'dbos.sqlite'}"
        if not self.ctx.pg_url:
            raise RuntimeError("dbos (pg) needs --pg-url")
        return self.ctx.pg_url

    def setup(self) -> None:
        if self.ctx.variant == "sqlite":
            (Path(self.ctx.workdir) / "dbos.sqlite").unlink(missing_ok=True)
        done = subprocess.run([util.bin_of("dbos"), "migrate", "-s", self.url], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dbos migrate failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def connect(self) -> None:
        from dbos import DBOSClient

        self.client = DBOSClient(system_database_url=self.url, application_name=APP)

    def enqueue(self, i: int) -> None:
        self.client.enqueue({"queue_name": QUEUE, "workflow_name": WORKFLOW}, i)

    def start_workers(self) -> None:
        env, app = util.worker_env(self.ctx, ["dbos_app.py"], BENCH_DBOS_URL=self.url)
        logs = [self.ctx.workdir / f"worker{n}.log" for n in range(self.ctx.processes)]
        for n, log in enumerate(logs):
            env["BENCH_DBOS_EXECUTOR"] = f"worker{n}"
            self.workers.append(spawn([sys.executable, "dbos_app.py"], dict(env), app, log))
        util.check_started(self.workers, logs)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc)
        self.workers = []

    def remaining(self) -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                schema = "" if self.ctx.variant == "sqlite" else "dbos."
                query = f"SELECT count(*) FROM {schema}workflow_status WHERE status IN ('ENQUEUED', 'PENDING')"
                return conn.execute(sa.text(query)).scalar_one()
        finally:
            engine.dispose()

    def teardown(self) -> None:
        if self.client is not None:
            self.client.destroy()
            self.client = None


if __name__ == "__main__":
    main(Dbos)
