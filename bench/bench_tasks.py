"""Tasks used by the benchmarks."""

import actorq

registry = actorq.TaskRegistry()


@registry.task("bench.noop")
async def noop() -> None:
    """Does nothing: measures the queue, not the work."""


@registry.task("bench.noop_sync")
def noop_sync() -> None:
    """Does nothing, in the worker's thread pool."""
