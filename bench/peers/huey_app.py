"""Huey's benchmark app: the no-op task, on SQLite or Redis as the environment says.

Imported by the Huey consumer (``huey_consumer huey_app.huey``) in the
phase's work directory and by the adapter's producer. Environment:
``BENCH_HUEY_KIND`` (``sqlite`` or ``redis``), ``BENCH_HUEY_DB`` (the SQLite
file) or ``BENCH_REDIS_URL``, and ``BENCH_LEDGER`` (read by the task).
"""

from __future__ import annotations

import os

from huey import RedisHuey, SqliteHuey
from ledger import record_job

NAME = "bench"

if os.environ.get("BENCH_HUEY_KIND") == "redis":
    # blocking=True (the default): workers wait in BRPOP, no polling
    huey = RedisHuey(NAME, url=os.environ["BENCH_REDIS_URL"], blocking=True)
else:
    # fsync=True: `pragma synchronous=2` (FULL) on every connection; WAL is the default journal_mode
    huey = SqliteHuey(NAME, filename=os.environ["BENCH_HUEY_DB"], journal_mode="wal", fsync=True)


@huey.task(name="bench.noop")
def noop(i: int) -> None:
    """The workload: record job ``i`` in the run's ledger (returns None: Huey stores no result)."""
    record_job(i)
