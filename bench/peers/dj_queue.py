"""dj-queue 0.14 (a ``django.tasks`` backend) on SQLite and PostgreSQL, as the benchmark runs it.

dj-queue needs Python 3.12 or newer (every release on PyPI says
``Requires-Python >=3.12``); its virtualenv must be made with a 3.12
interpreter (`PYTHON` below). Under an older Python, `info` says so in
``unavailable``.

Set-up (its production shape, sized for 2 cores):

- Django 6.1 with ``INSTALLED_APPS = ["dj_queue"]``, its router, and
  ``TASKS["default"]`` on ``DjQueueBackend`` (settings: ``dj_queue_app.py``;
  the task, Django's ``@task``: ``dj_queue_tasks.py``). `setup` runs
  ``django-admin migrate``.
- Runtime: one ``django-admin dj_queue`` supervisor in its default ``fork``
  mode, whose worker entry is dj-queue's default (all queues, 3 threads,
  polling every 0.1 s, prefetch 2) with ``processes: 2``: 2 worker processes,
  plus its dispatcher process.
- ``pg``: PostgreSQL 15 with its defaults (``fsync=on``,
  ``synchronous_commit=on``), ``CONN_MAX_AGE=600`` as dj-queue's PostgreSQL
  advice says, SKIP LOCKED and LISTEN/NOTIFY on (its defaults).
- ``sqlite``: one SQLite file, opened as Django advises for concurrent
  writers (``transaction_mode="IMMEDIATE"``, ``timeout=30``) in WAL with
  ``synchronous=FULL``; dj-queue polls there (no SKIP LOCKED, no NOTIFY).
- Successful jobs are kept (its default ``preserve_finished_jobs=True``).
- Producer: ``record.enqueue(i)`` in a process that ran ``django.setup()``;
  a batch is the backend's ``enqueue_all([(record, [i], {}), ...])``.

Durability: ``enqueue`` returns after its transaction committed; on
PostgreSQL with ``synchronous_commit=on`` the commit waits for the WAL fsync,
on SQLite WAL with ``synchronous=FULL`` each commit fsyncs the WAL. Both:
class ``fsync``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group  # noqa: E402

import sqlpeer as util  # noqa: E402


PYTHON = "3.12"  # the interpreter its virtualenv needs (dj-queue: Requires-Python >=3.12)
REQUIREMENTS = ["dj-queue[postgres]==0.14.2", "Django==6.1.3", "psycopg[binary]==3.3.9"]
MODULES = ["dj_queue_app.py", "dj_queue_tasks.py"]


class DjQueue(Adapter):
    name = "dj_queue"
    variants = {
        "sqlite": "SQLite WAL, synchronous=FULL: each enqueue commits with fsync",
        "pg": "PostgreSQL, synchronous_commit=on: each enqueue commits (WAL fsync) before it returns",
    }
    classes = {"sqlite": "fsync", "pg": "fsync"}
    needs = ("postgresql",)
    variant_needs = {"sqlite": ()}  # its SQLite variant needs no server
    storage = "SQLite WAL synchronous=FULL, or PostgreSQL (fsync=on, synchronous_commit=on)"
    has_batch = True
    unavailable = (None if sys.version_info >= (3, 12) else
                   f"dj-queue needs Python >= 3.12 (pip: 'Ignored the following versions that require a different "
                   f"python version: ... 0.14.2 Requires-Python >=3.12'); this is Python "
                   f"{sys.version_info.major}.{sys.version_info.minor}")

    def __init__(self, ctx):
        super().__init__(ctx)
        self.workers = []
        self.module = None

    def _env(self) -> tuple[dict[str, str], Path]:
        extra = {"DJANGO_SETTINGS_MODULE": "dj_queue_app"}
        if self.ctx.variant == "sqlite":
            extra["BENCH_DJQ_SQLITE"] = str(Path(self.ctx.workdir).resolve() / "dj_queue.sqlite3")
        elif not self.ctx.pg_url:
            raise RuntimeError("dj_queue (pg) needs --pg-url")
        return util.worker_env(self.ctx, MODULES, **extra)

    def setup(self) -> None:
        env, app = self._env()
        done = subprocess.run([util.bin_of("django-admin"), "migrate", "--verbosity", "0"], env=env, cwd=app,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"django-admin migrate failed: {done.stdout[-1000:]} {done.stderr[-1500:]}")

    def connect(self) -> None:
        if self.module is not None:
            return
        env, app = self._env()
        for key in ("DJANGO_SETTINGS_MODULE", "BENCH_DJQ_SQLITE", util.PG_ENV):
            if key in env:
                os.environ[key] = env[key]
        sys.path.insert(0, str(app))
        import django

        django.setup()
        import dj_queue_tasks

        self.module = dj_queue_tasks

    def enqueue(self, i: int) -> None:
        self.module.record.enqueue(i)

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        record = self.module.record
        record.get_backend().enqueue_all([(record, [i], {}) for i in ids])

    def start_workers(self) -> None:
        env, app = self._env()
        log = self.ctx.workdir / "supervisor.log"
        # one supervisor; its worker entry forks `processes` (2) worker processes
        self.workers.append(spawn([util.bin_of("django-admin"), "dj_queue"], env, app, log))
        util.check_started(self.workers, [log], wait=1.0)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc)
        self.workers = []

    def remaining(self) -> int:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM dj_queue_jobs WHERE finished_at IS NULL")
            return cur.fetchone()[0]

    def teardown(self) -> None:
        if self.module is not None:
            from django.db import connections

            connections.close_all()


if __name__ == "__main__":
    main(DjQueue)
