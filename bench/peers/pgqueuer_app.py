"""The pgqueuer worker the benchmark runs (``pgq run pgqueuer_app:create``).

One entrypoint, ``record``, whose body is the shared workload:
``ledger.record_job(i)`` with ``i`` the job's payload (ASCII digits). The
database is named by ``$BENCH_PG_URL``; the driver is asyncpg, pgqueuer's
first-named one.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg
from ledger import record_job
from pgqueuer import PgQueuer
from pgqueuer.models import Job


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` calls: a PgQueuer on one asyncpg connection with the ``record`` entrypoint."""
    conn = await asyncpg.connect(os.environ["BENCH_PG_URL"])
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("record")
    async def record(job: Job) -> None:
        record_job(int(job.payload))

    try:
        yield pgq
    finally:
        await conn.close()
