"""The Dramatiq broker and actor the benchmark's workers import (``dramatiq dramatiq_app``).

The Redis URL comes from ``BENCH_REDIS_URL`` (set by the adapter,
dramatiq.py). The actor's body is the shared workload, ``record_job(i)``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from ledger import record_job

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])  # Dramatiq's default middleware
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", max_retries=0)
def noop(i: int) -> None:
    """The workload: record that job ``i`` ran."""
    record_job(i)
