"""Tasks of examples/09_unique.py: one declares a unique period, one does not."""

from actorq import TaskRegistry

registry = TaskRegistry()


# Each job holds a key made of the task name and its arguments for an hour from its
# insert, finished or not: one report per day and format, however often it is asked for.
@registry.task("reports.daily", unique_for=3600)
async def daily(day: str, fmt: str = "pdf") -> str:
    return f"{day}.{fmt} built"


@registry.task("emails.digest")
def digest(user: str) -> str:
    return f"digest for {user} sent"
