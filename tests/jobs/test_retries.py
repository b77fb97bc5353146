"""Which errors are retried, and after how long: pure rules, then end to end through real workers.

The end-to-end tests run a node with real worker processes on SQLite and on
PostgreSQL. Delays are asserted from the journal row (its ``run_at``, between the
clock read before the job was enqueued and after its retry was seen, plus the
delay), never by waiting for them: the delays are an hour or more.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from worker_support import acks_received, worker_on_router

from actorq import Job, Node, PermanentError, Retry, RetryPolicy, TaskRegistry, TransientError
from actorq.jobs import wire
from actorq.jobs.retry import MAX_RETRY_DELAY, backoff_delay, retryable
from actorq.jobs.task import encode_payload
from actorq.testing import eventually


class Flaky(Exception):
    pass


class Broken(Flaky):
    pass


class BadInput(PermanentError):
    pass


class Busy(TransientError):
    pass


# -- the rules, in the worker's process (pure) ----------------------------------------------------
@pytest.mark.parametrize(("exc", "retry_on", "dont_retry_on", "expected"), [
    (ValueError(), (), (), True),  # no rules: every exception is retried
    (Flaky(), (Flaky,), (), True),
    (Broken(), (Flaky,), (), True),  # a subclass of a listed class
    (ValueError(), (Flaky,), (), False),  # not listed
    (Broken(), (Flaky,), (Broken,), False),  # dont_retry_on is read first: it narrows retry_on
    (KeyError(), (), (LookupError,), False),
    (ValueError(), (), (LookupError,), True),
    (BadInput(), (), (), False),  # PermanentError: never
    (BadInput(), (Exception,), (), False),
    (Busy(), (Flaky,), (Exception,), True),  # TransientError: always
    (Retry(5), (Flaky,), (Exception,), True),  # Retry: always
])
def test_which_exceptions_are_retryable(exc: BaseException, retry_on: tuple[type[BaseException], ...],
                                        dont_retry_on: tuple[type[BaseException], ...], expected: bool) -> None:
    assert retryable(exc, retry_on, dont_retry_on) is expected


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, MAX_RETRY_DELAY + 1, "60", True])
def test_retry_refuses_a_delay_out_of_range(bad: object) -> None:
    with pytest.raises(ValueError, match="a retry delay must be a number of seconds from 0"):
        Retry(bad)  # type: ignore[arg-type]


def test_retry_says_when_in_its_text() -> None:
    assert str(Retry(90)) == "retry in 90 s"
    assert str(Retry(1.5, "rate limited")) == "rate limited (retry in 1.5 s)"
    assert str(Retry()) == "retry after the backoff"


@pytest.mark.parametrize(("returns", "expected"), [
    (12, 12.0), (0.25, 0.25), (-3.0, 0.0), (10.0**12, float(MAX_RETRY_DELAY)),
    (math.nan, None), (math.inf, None), ("5", None), (None, None), (True, None),
])
def test_a_backoff_functions_value_is_made_fit_for_the_wire(returns: object, expected: float | None) -> None:
    assert backoff_delay(lambda attempt, exc: returns, 1, ValueError()) == expected  # type: ignore[arg-type,return-value]


def test_a_backoff_function_that_raises_gives_no_value() -> None:
    assert backoff_delay(lambda attempt, exc: 1 / 0, 1, ValueError()) is None


def test_a_backoff_function_is_called_with_the_attempt_and_the_exception() -> None:
    seen = []
    exc = Flaky("x")
    assert backoff_delay(lambda attempt, e: seen.append((attempt, e)) or 7, 3, exc) == 7.0
    assert seen == [(3, exc)]


def test_the_task_decorator_keeps_the_rules_and_the_backoff() -> None:
    registry = TaskRegistry()

    def backoff(attempt: int, exc: BaseException) -> float:
        return 10.0 * attempt

    @registry.task("r.fn", retry=backoff, retry_on=Flaky, dont_retry_on=(Broken, KeyError))
    def fn() -> None: ...

    @registry.task("r.linear", retry=RetryPolicy.linear(5.0))
    def linear() -> None: ...

    assert fn.retry_on == (Flaky,) and fn.dont_retry_on == (Broken, KeyError) and fn.backoff is backoff
    assert fn.policy.retry.kind == "function"  # what the node knows: the function stays in the worker
    assert linear.backoff is None and linear.policy.retry == RetryPolicy.linear(5.0)


@pytest.mark.parametrize(("options", "message"), [
    ({"retry_on": ValueError()}, "retry_on must be an exception class"),
    ({"dont_retry_on": (KeyError, "OSError")}, "dont_retry_on must be an exception class"),
    ({"retry_on": (int,)}, "retry_on must be an exception class"),
    ({"retry": 5}, "retry must be a RetryPolicy or a function"),
])
def test_the_task_decorator_refuses_what_is_not_a_rule(options: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        TaskRegistry().task("r.bad", **options)  # type: ignore[arg-type]


# -- the ACK items a worker sends, seen from a ROUTER --------------------------------------------
unit = TaskRegistry()


@unit.task("ru.retry")
async def unit_retry(seconds: float | None) -> None:
    raise Retry(seconds)


@unit.task("ru.function", retry=lambda attempt, exc: 100.0 * attempt if isinstance(exc, Flaky) else math.nan)
async def unit_function(error: str) -> None:
    if error == "slow":
        await asyncio.sleep(60)
    raise Flaky("f") if error == "Flaky" else ValueError("v")


@unit.task("ru.slow", timeout=0.1, retry=lambda attempt, exc: 7.0 if isinstance(exc, TimeoutError) else 0.0)
async def unit_slow() -> None:
    await asyncio.sleep(60)


@unit.task("ru.bad_input", retry=lambda attempt, exc: 5.0, retry_on=(Flaky,))
async def unit_bad_input() -> None:
    raise ValueError("not retried")


async def test_the_worker_sends_the_delay_of_a_retryable_end_only(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with worker_on_router(tmp_path, unit, concurrency=8, prefetch=0) as (worker, router):
        jobs = [("a", "ru.retry", [90]), ("b", "ru.retry", [None]), ("c", "ru.function", ["Flaky"]),
                ("d", "ru.function", ["ValueError"]), ("e", "ru.slow", []), ("f", "ru.bad_input", [])]
        worker._on_jobs([wire.JobMessage(job_id, n, task, encode_payload(args, {}), 2, 20, "default")
                         for n, (job_id, task, args) in enumerate(jobs, 1)])
        acks = await loop.run_in_executor(None, acks_received, router, len(jobs))
    ended = {item.job_id: item for ack in acks for item in ack.ended}
    assert {job_id: (item.end, item.delay) for job_id, item in ended.items()} == {
        "a": ("raised", 90.0),  # Retry's own delay
        "b": ("raised", None),  # Retry() without one: the node's backoff
        "c": ("raised", 200.0),  # the function's value for attempt 2
        "d": ("raised", None),  # the function returned NaN: none sent, the node's exponential backoff
        "e": ("timed_out", 7.0),  # a timed-out attempt asks the function too, with a TimeoutError
        "f": ("permanent", None),  # not retryable: no delay, whatever the function says
    }
    assert ended["f"].error == "ValueError: not retried" and "not retried" in ended["f"].traceback


# -- end to end -----------------------------------------------------------------------------------
TASKS = """
from actorq import PermanentError, Retry, TransientError


class Flaky(Exception):
    pass


class BadInput(PermanentError):
    pass


class Busy(TransientError):
    pass


ERRORS = {"Flaky": Flaky, "ValueError": ValueError, "KeyError": KeyError, "BadInput": BadInput, "Busy": Busy}


@registry.task("rt.only_flaky", retry=RetryPolicy.fixed(0), retry_on=(Flaky,))
def only_flaky(error):
    record()
    raise ERRORS[error](f"{error} on attempt {current_job().attempt}")


@registry.task("rt.never_key", retry=RetryPolicy.fixed(0), dont_retry_on=(KeyError,))
async def never_key(error):
    record()
    raise ERRORS[error]("always")


@registry.task("rt.retry_in")
async def retry_in(seconds):
    record()
    raise Retry(delay=seconds, reason="rate limited")


@registry.task("rt.function", retry=lambda attempt, exc: 5000.0 * attempt + len(str(exc)))
def function_backoff():
    record()
    raise Flaky("abc")
"""


@pytest.fixture(params=["sqlite", "postgres"])
def journal_choice(request: pytest.FixtureRequest) -> dict[str, str]:
    """The `topology` keywords of each journal: the default SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    from journal_support import PG_URL

    return {"journal_url": PG_URL, "schema": request.getfixturevalue("pg_schema")}


async def test_only_retryable_errors_are_retried(topology, journal_choice):
    topo = topology(TASKS, processes=1, **journal_choice)
    listed = Job("rt.only_flaky", ["Flaky"], max_attempts=3)  # retry_on names it: retried until dead
    unlisted = Job("rt.only_flaky", ["ValueError"], max_attempts=3)  # not named: failed at once
    permanent = Job("rt.only_flaky", ["BadInput"], max_attempts=3)  # a PermanentError, even if it were listed
    excluded = Job("rt.never_key", ["KeyError"], max_attempts=3)  # dont_retry_on: failed after 1 attempt
    other = Job("rt.never_key", ["ValueError"], max_attempts=2)  # not excluded: retried
    transient = Job("rt.only_flaky", ["Busy"], max_attempts=2)  # a TransientError, though not listed
    jobs = [listed, unlisted, permanent, excluded, other, transient]
    async with Node(topo.config) as node:
        await node.queue().enqueue_many(jobs)
        counts = await node.wait_idle(timeout=60)
    assert counts == {"default": {"dead": 3, "failed": 3}}
    attempts = {job.id: sorted(e.attempt for e in topo.ledger.read() if e.job_id == job.id) for job in jobs}
    assert attempts == {listed.id: [1, 2, 3], unlisted.id: [1], permanent.id: [1], excluded.id: [1],
                        other.id: [1, 2], transient.id: [1, 2]}
    states = topo.states()
    assert [states[job.id] for job in jobs] == ["dead", "failed", "failed", "failed", "dead", "dead"]
    assert topo.info(unlisted.id).errors == ["ValueError: ValueError on attempt 1"]
    with topo.client() as client:  # the error and its traceback are kept, as for Discard
        outcome = client.outcome(excluded.id)
    assert outcome.error == "KeyError: 'always'"
    assert outcome.traceback is not None and 'raise ERRORS[error]("always")' in outcome.traceback


async def test_a_delay_from_the_worker_sets_the_next_run(topology, journal_choice):
    topo = topology(TASKS, processes=1, **journal_choice)
    asked = Job("rt.retry_in", [7200], max_attempts=3)
    last = Job("rt.retry_in", [7200], max_attempts=1)  # Retry on the last attempt: dead, like any raise
    function = Job("rt.function", [], max_attempts=3)
    before = time.time()
    async with Node(topo.config) as node:
        await node.queue().enqueue_many([asked, last, function])
        await eventually(lambda: topo.states() == {asked.id: "retry", last.id: "dead", function.id: "retry"},
                         timeout=60, message="each job retried or dead")
        after = time.time()
    # the run_at the node stored: the attempt's end (between before and after) plus the delay
    assert before + 7200 <= topo.info(asked.id).run_at <= after + 7200
    assert topo.info(asked.id).errors == ["Retry: rate limited (retry in 7200 s)"]
    # the function's value, from the worker: 5000 * attempt 1 + len("abc")
    assert before + 5003 <= topo.info(function.id).run_at <= after + 5003
    assert topo.info(last.id).attempts == 1
