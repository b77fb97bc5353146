"""Tasks of examples/13_keys.py: each appends what it does to a file, so the example can
show the order and the overlap the keys allowed."""

import asyncio
import os

from actorq import TaskRegistry

registry = TaskRegistry()


def note(path: str, line: str) -> None:
    """Append one line with a single write (the example's two worker processes share the file)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@registry.task("orders.apply")
async def apply(path: str, customer: str, step: str) -> None:
    await asyncio.sleep(0.01)  # the steps of one customer would overlap without their key
    note(path, f"{customer} {step}")


# At most 2 renders of one tenant at once; jobs past that wait for a slot (block).
@registry.task("reports.render", concurrency_limit=2)
async def render(path: str, n: int) -> None:
    note(path, f"start {n}")
    await asyncio.sleep(0.02)
    note(path, f"end {n}")
