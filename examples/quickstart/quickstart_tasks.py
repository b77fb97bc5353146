"""Tasks for the quick start: one async, one sync, one that fails now and then."""

import asyncio
import random

import actorq

registry = actorq.TaskRegistry()


@registry.task("quickstart.add")
async def add(a: int, b: int) -> int:
    """Add two numbers after a short pause (async: runs on the worker's loop)."""
    await asyncio.sleep(0.001)
    return a + b


@registry.task("quickstart.checksum")
def checksum(text: str) -> int:
    """A small CPU-bound job (sync: runs in the worker's thread pool)."""
    return sum(text.encode()) % 65521


@registry.task("quickstart.flaky", max_attempts=5)
def flaky(p: float = 0.3) -> None:
    """Fails with probability p; retried with backoff until it passes or runs out of attempts."""
    if random.random() < p:
        raise RuntimeError("flaky failure")
