"""The taskiq broker and task the benchmark's workers import (``taskiq worker taskiq_app:broker``).

The broker is taskiq-redis's ``RedisStreamBroker`` (a Redis stream read
through a consumer group, each message acknowledged with XACK), on the URL in
``BENCH_REDIS_URL`` (set by the adapter, taskiq.py). No result backend. The
task's body is the shared workload, ``record_job(i)``.
"""

from __future__ import annotations

import os

from ledger import record_job
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(url=os.environ["BENCH_REDIS_URL"])


@broker.task(task_name="bench_noop")
async def noop(i: int) -> None:
    """The workload: record that job ``i`` ran."""
    record_job(i)
