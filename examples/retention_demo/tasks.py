"""Tasks of examples/10_retention.py: one succeeds, one uses up its attempts."""

from actorq import TaskRegistry

registry = TaskRegistry()


@registry.task("retention.thumbnail")
def thumbnail(name: str) -> str:
    return f"{name}.thumb.png"


@registry.task("retention.broken", max_attempts=1)
def broken(name: str) -> None:
    raise OSError(f"cannot read {name}")
