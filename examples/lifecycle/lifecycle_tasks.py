"""Tasks of examples 04 and 05: time limits, cancellation and paused queues."""

import asyncio
import time

import actorq

registry = actorq.TaskRegistry()


@registry.task("lifecycle.slow_fetch", timeout=0.2, max_attempts=2,
               retry=actorq.RetryPolicy(base=0.0, jitter=0.0))
async def slow_fetch(url: str) -> None:
    await asyncio.sleep(60)  # never answers: cancelled at 0.2 s, each attempt


@registry.task("lifecycle.crunch", timeout=0.2, max_attempts=1)
def crunch() -> None:
    time.sleep(60)  # a thread cannot be stopped: its worker process is replaced at 0.2 s


@registry.task("lifecycle.export")
def export(rows: int) -> None:
    for _ in range(rows):  # a sync task checks the flag between units of work
        if actorq.current_job().cancelled:
            return
        time.sleep(0.01)


@registry.task("lifecycle.send", queue="emails")
async def send(to: str) -> None:
    await asyncio.sleep(0)
