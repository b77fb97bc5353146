"""Tasks of examples/07_results.py: one returns a value, one raises."""

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
