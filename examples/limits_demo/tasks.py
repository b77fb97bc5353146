"""Tasks of examples/12_queue_limits.py: a call to a slow partner that allows two at once,
and an upload nobody serves in the example (its queue fills)."""

import asyncio

from actorq import TaskRegistry, current_job
from actorq.testing import Ledger

registry = TaskRegistry()


# Each run writes "start" and "end" lines to a file every worker process appends to,
# so the example can replay how many ran at once.
@registry.task("partner.call", queue="partner")
async def call(ledger: str, n: int) -> None:
    ctx = current_job()
    Ledger(ledger).record(ctx.id, ctx.attempt, tag="start")
    await asyncio.sleep(0.03)
    Ledger(ledger).record(ctx.id, ctx.attempt, tag="end")


@registry.task("media.upload", queue="uploads")
def upload(name: str) -> None:
    pass
