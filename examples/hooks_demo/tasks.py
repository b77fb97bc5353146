"""Tasks of examples/14_hooks_and_metrics.py, with hooks around each job (run in the worker)."""

import contextvars

from actorq import RetryPolicy, TaskRegistry, current_job

registry = TaskRegistry()
SPAN: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="no span")


@registry.before
def open_span(job) -> None:  # job: actorq.JobContext
    SPAN.set(f"span {job.task}#{job.attempt}")


@registry.on_failure
def broken_reporter(job, error: BaseException) -> None:
    raise RuntimeError("a hook that raises is logged and counted; the job goes on")


@registry.task("hooks.greet")
async def greet(name: str) -> str:
    return f"hello {name}, in {SPAN.get()}"


@registry.task("hooks.flaky", max_attempts=2, retry=RetryPolicy.fixed(0.0))
def flaky() -> str:
    if current_job().attempt == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@registry.task("hooks.broken", max_attempts=1)
def broken() -> None:
    raise ValueError("never works")
