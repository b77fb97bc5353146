"""Tasks used by the benchmarks."""

import asyncio

import actorq

registry = actorq.TaskRegistry()


@registry.task("bench.noop")
async def noop() -> None:
    """Does nothing: measures the queue, not the work."""


@registry.task("bench.noop_key_rate", key_rate="1000000/s")
async def noop_key_rate() -> None:
    """Does nothing; each of its flow keys has a rate far above any run's (it never binds):
    measures what a key rate costs at admission."""


@registry.task("bench.value")
async def value() -> dict[str, object]:
    """Returns a small value, stored with the job as its result: measures the result path."""
    return {"ok": True, "n": 42}


@registry.task("bench.noop_sync")
def noop_sync() -> None:
    """Does nothing, in the worker's thread pool."""


@registry.task("bench.sleep")
async def sleep(ms: float) -> None:
    """Waits `ms` milliseconds on the worker's loop: a job that takes time without taking a CPU."""
    await asyncio.sleep(ms / 1000.0)
