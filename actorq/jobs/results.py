"""Waiting for a job's outcome: pushed to waiters in the node, polled by other processes.

::

    ask / wait(job_id) ──▶ futures[job_id], watched ∋ job_id
                               ▲                         │ (the writer tests membership)
                               │                         ▼
       resolve(outcome) ◀── writer's commit callback ◀── COMPLETE / FAIL of a watched job:
         (on the loop)         (after the group           its outcome read in the same
                                committed)                transaction (`Journal.result`)

A waiter in the node is pushed its job's outcome by the journal writer: after each
group that completed or failed a watched job commits, the writer hands the final
outcome it read in that transaction to `ResultWaiters.resolve`. An outcome no ack
brings (a crash reclaimed by the dispatcher or the leader, a cancel) is found by
the fallback: each waiter reads the journal itself, once at once (the job may have
ended before it watched) and then with a backoff doubling up to `POLL_MAX` seconds.

A process without a node (`actorq.Client`) only polls: `outcome_value` turns what it
read into the return value or the error, the same way for both.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import msgpack

from actorq.errors import AskTimeout, JobFailed, ResultExpired
from actorq.jobs import journal_writer as jw
from actorq.journal.protocol import TERMINAL_STATES, JobResult, JobState

__all__ = ["POLL_FIRST", "POLL_MAX", "ResultWaiters", "outcome_value", "timed_out"]

logger = logging.getLogger(__name__)

POLL_FIRST = 0.05  # seconds before a waiter's first fallback read after the one at once
POLL_MAX = 1.0  # the longest wait between fallback reads (a node's waiter is pushed, this is a safety net)


def outcome_value(outcome: JobResult) -> Any:
    """The return value of a job that ended, decoded; or the error saying why there is none.

    Args:
        outcome: the job's outcome, in a final state.

    Returns:
        What the task returned (None when it returned None or its task keeps no results).

    Raises:
        JobFailed: the job ended dead, failed or cancelled (with its error and traceback text).
        ResultExpired: it succeeded, but its result's time has passed.
    """
    if outcome.state == JobState.SUCCEEDED:
        if outcome.expired:
            raise ResultExpired(f"job {outcome.id} succeeded, but its result has expired")
        if outcome.result is None:
            return None
        # any map keys: the value was made by a registered task, and {1: "a"} comes back as made
        return msgpack.unpackb(outcome.result, raw=False, strict_map_key=False)
    error = "cancelled" if outcome.state == JobState.CANCELLED else outcome.error
    raise JobFailed(outcome.id, outcome.state.value, error, outcome.traceback)


def timed_out(job_id: str, timeout: float, last: JobResult | None) -> AskTimeout:
    """The `AskTimeout` of a wait for `job_id` that ran out, naming where the job was."""
    where = "unknown to the journal" if last is None else f"still {last.state.value}"
    return AskTimeout(f"job {job_id} did not end within {timeout:g} s ({where}); it goes on, and its result "
                      "can be fetched later by id (Client.result)")


class ResultWaiters:
    """The node's waiters for job outcomes (see the module docstring). Used on the node's loop.

    Args:
        submit: hands an op to the node's current journal writer (``submit(kind, arg, callback)``).
    """

    def __init__(self, submit: Callable[[int, Any, jw.Callback | None], None]) -> None:
        self._submit = submit
        self.watched: set[str] = set()
        """Ids of the jobs waited for; each journal writer of the node tests membership in it."""
        self._futures: dict[str, list[asyncio.Future[JobResult]]] = {}

    def resolve(self, outcome: JobResult) -> None:
        """Give a job's final outcome to its waiters (the writer's commit callback, on the loop)."""
        for fut in self._futures.get(outcome.id, ()):
            if not fut.done():
                fut.set_result(outcome)

    async def wait(self, job_id: str, timeout: float, *, asked: float | None = None) -> Any:
        """Wait up to `timeout` seconds for the job to end, and return its value (`outcome_value`).

        `asked` is the caller's whole timeout, named by `AskTimeout` (default `timeout`).

        Raises:
            JobFailed, ResultExpired: as `outcome_value`.
            AskTimeout: the job did not end in time (it goes on).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fut: asyncio.Future[JobResult] = loop.create_future()
        self._futures.setdefault(job_id, []).append(fut)
        self.watched.add(job_id)  # before the first read: an ack committed after it is pushed
        last: list[JobResult | None] = [None]
        delay = POLL_FIRST
        try:
            while True:
                self._read(job_id, fut, last)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise timed_out(job_id, timeout if asked is None else asked, last[0])
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(fut), min(delay, remaining))
                except asyncio.TimeoutError:
                    delay = min(delay * 2, POLL_MAX)
                    continue
                return outcome_value(outcome)
        finally:
            waiting = self._futures.get(job_id, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self._futures.pop(job_id, None)
                self.watched.discard(job_id)

    def _read(self, job_id: str, fut: "asyncio.Future[JobResult]", last: list[JobResult | None]) -> None:
        def read(outcome: Any, error: BaseException | None) -> None:
            if error is not None:  # the journal is out of reach: the next read tries again
                logger.debug("reading the outcome of job %s failed: %s", job_id, error)
                return
            last[0] = outcome
            if outcome is not None and outcome.state in TERMINAL_STATES and not fut.done():
                fut.set_result(outcome)

        try:
            self._submit(jw.CALL, lambda journal: journal.result(job_id), read)
        except Exception as exc:  # no writer runs (the node is restarting its core): read again later
            logger.debug("cannot read the outcome of job %s now: %s", job_id, exc)
