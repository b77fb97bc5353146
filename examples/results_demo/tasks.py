"""Tasks of examples/07_results.py and 11_pushed_results.py: one returns a value, one raises, one runs until cancelled."""

import asyncio

from actorq import TaskRegistry

registry = TaskRegistry()


@registry.task("results.quote")
def quote(items: list[str]) -> dict[str, object]:
    prices = {"tea": 3, "cake": 4}
    return {"total": sum(prices[item] for item in items), "items": len(items)}


@registry.task("results.refuse", max_attempts=1)
def refuse(item: str) -> None:
    raise KeyError(item)


@registry.task("results.briefly", result_ttl=60.0)  # this task's values are kept a minute
async def briefly() -> str:
    return "kept for a minute"


@registry.task("results.long")  # runs until cancelled (examples/11_pushed_results.py)
async def long() -> None:
    await asyncio.sleep(600)
