"""The Celery app the benchmark's workers import (``celery -A celery_app worker``).

Configured from the environment the adapter (celery.py) sets: the Redis URL
in ``BENCH_REDIS_URL`` and the variant in ``BENCH_VARIANT`` (``acks_late`` or
``acks_early``). The task body is the shared workload, ``record_job(i)``.
"""

from __future__ import annotations

import os

from celery import Celery
from ledger import record_job

PREFETCH_MULTIPLIER = 64  # Celery's optimizing guide: "large, say 64 or 128" for many short tasks

app = Celery("celery_app", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,  # no result backend: the workload returns nothing
    result_backend=None,
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if os.environ.get("BENCH_VARIANT") == "acks_late":
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)


@app.task(name="bench.noop", ignore_result=True)
def noop(i: int) -> None:
    """The workload: record that job ``i`` ran."""
    record_job(i)
