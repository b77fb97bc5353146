"""The procrastinate app the benchmark's workers load (``procrastinate --app=procrastinate_app.app worker``).

One async task, ``record``, whose body is the shared workload: ``ledger.record_job(i)``.
The database is named by ``$BENCH_PG_URL``; the connector is psycopg 3's.
"""

from __future__ import annotations

import os

import procrastinate
from ledger import record_job

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PG_URL"]))


@app.task(name="record")
async def record(i: int) -> None:
    """The benchmark's no-op job: note that job ``i`` ran."""
    record_job(i)
