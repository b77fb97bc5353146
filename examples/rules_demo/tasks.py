"""Tasks of examples/15_rates_and_breakers.py: a report that may run two at a time, and a
call to a partner that fails while a flag file says it is down."""

import asyncio
import os

from actorq import CircuitBreaker, RetryPolicy, TaskRegistry, current_job
from actorq.testing import Ledger

registry = TaskRegistry()


# At most 2 at once on every node together; the queue's other tasks are not held back.
@registry.task("reports.build", queue="work", concurrency=2)
async def build(ledger: str) -> None:
    ctx = current_job()
    Ledger(ledger).record(ctx.id, ctx.attempt, tag="start")
    await asyncio.sleep(0.03)
    Ledger(ledger).record(ctx.id, ctx.attempt, tag="end")


# After 3 failed attempts within a minute: no job of it is leased for 0.3 s, then one probe
# at a time until one succeeds. (A real cool-down is tens of seconds.)
@registry.task("partner.call", queue="work", max_attempts=100, retry=RetryPolicy.fixed(0.01),
               circuit_breaker=CircuitBreaker(failures=3, window=60, cool_down=0.3, probes=1))
def call(flag: str) -> None:
    if os.path.exists(flag):
        raise ConnectionError("partner down")
