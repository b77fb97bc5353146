"""The arq worker settings the benchmark's workers run (``arq arq_app.WorkerSettings``).

The Redis URL comes from ``BENCH_REDIS_URL`` (set by the adapter, arq.py).
The job's body is the shared workload, ``record_job(i)``.
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings
from ledger import record_job


async def noop(ctx: dict[str, Any], i: int) -> None:
    """The workload: record that job ``i`` ran."""
    record_job(i)


class WorkerSettings:
    """arq's defaults (max_jobs 10, poll_delay 0.5 s, results kept 1 h, max_tries 5) but for the URL."""

    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
