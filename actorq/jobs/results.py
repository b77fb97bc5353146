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

A process without a node (`actorq.Client`) is pushed too, where it can be: a node's
producer endpoint takes its wait as one of these waiters (a WAIT request, see
`actorq.jobs.producers`), and on PostgreSQL a `DoneWatch` LISTENs on the journal's
done channel, which the transactions that end jobs NOTIFY with their ids (`done_ids`),
and wakes the client's waiters to read again; they also read every `PUSHED_POLL`
seconds, for a notification missed. With neither (SQLite, no node) it polls with the
backoff above. `outcome_value` turns what was read into the return value or the
error, the same way for all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from typing import Any, Callable, Collection

import msgpack

from actorq.errors import AskTimeout, JobFailed, NotCommitted, ResultExpired
from actorq.jobs import journal_writer as jw
from actorq.journal.protocol import TERMINAL_STATES, JobResult, JobState

__all__ = ["POLL_FIRST", "POLL_MAX", "PUSHED_POLL", "DoneWatch", "ResultWaiters", "done_ids", "next_read", "outcome_value",
           "timed_out"]

logger = logging.getLogger(__name__)

POLL_FIRST = 0.05  # seconds before a waiter's first fallback read after the one at once
POLL_MAX = 1.0  # the longest wait between fallback reads (a node's waiter is pushed, this is a safety net)
PUSHED_POLL = 2.0
"""Seconds between a pushed client's fallback reads (`Client.result` on PostgreSQL): it is woken
by the done channel's NOTIFY; the reads catch what no notification brings."""


def next_read(watch: "DoneWatch | None", pushed_poll: float, delay: float, remaining: float) -> tuple[float, float]:
    """How long a waiter of a process without a node sleeps before its next read, and the
    backoff's next delay: `pushed_poll` while a listening `watch` will wake it, else the
    backoff's `delay` (doubling up to `POLL_MAX`); never past `remaining`."""
    if watch is not None and watch.connected.is_set():
        return min(pushed_poll, remaining), delay
    return min(delay, remaining), min(delay * 2, POLL_MAX)


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


def discarded(job: Any) -> NotCommitted:
    """The `NotCommitted` of an `ask` whose job an enqueue did not add: its concurrency key had
    its limit of admitted jobs (``on_conflict="discard"``)."""
    return NotCommitted(f"job {job.id} was discarded: its concurrency key {job.concurrency_key!r} "
                        "had its limit of admitted jobs (on_conflict='discard')")


def time_left(deadline: float, job_id: str, timeout: float) -> float:
    """Seconds from now (`time.monotonic`) to `deadline`, for a client's `ask` that has enqueued
    `job_id` and waits for it next; none left raises its `AskTimeout`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise timed_out(job_id, timeout, None)
    return left


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
        self._last: dict[str, JobResult | None] = {}  # the last outcome read of each job waited for

    def resolve(self, outcome: JobResult) -> None:
        """Give a job's final outcome to its waiters (the writer's commit callback, on the loop)."""
        for fut in self._futures.get(outcome.id, ()):
            if not fut.done():
                fut.set_result(outcome)

    def poke(self, job_ids: Collection[str] | None) -> None:
        """Read again, at once, the outcome of those of `job_ids` that are waited for (None: of
        every job waited for): another process said they ended (PostgreSQL's done channel, on
        the loop). Each read goes through the writer as the fallback reads do."""
        for job_id in list(self.watched) if job_ids is None else [i for i in job_ids if i in self.watched]:
            self._read(job_id, None)

    async def outcome(self, job_id: str, timeout: float) -> JobResult | None:
        """Wait up to `timeout` seconds for the job to end and return its outcome.

        Returns:
            The final outcome; or, if it did not end in time, the last one read (a live
            state), None if none was read or the job is unknown.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fut: asyncio.Future[JobResult] = loop.create_future()
        self._futures.setdefault(job_id, []).append(fut)
        self.watched.add(job_id)  # before the first read: an ack committed after it is pushed
        delay = POLL_FIRST
        try:
            while True:
                self._read(job_id, fut)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return fut.result() if fut.done() else self._last.get(job_id)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(delay, remaining))
                except asyncio.TimeoutError:
                    delay = min(delay * 2, POLL_MAX)
        finally:
            waiting = self._futures.get(job_id, [])
            if fut in waiting:
                waiting.remove(fut)
            if not waiting:
                self._futures.pop(job_id, None)
                self._last.pop(job_id, None)
                self.watched.discard(job_id)

    async def wait(self, job_id: str, timeout: float, *, asked: float | None = None) -> Any:
        """Wait up to `timeout` seconds for the job to end, and return its value (`outcome_value`).

        `asked` is the caller's whole timeout, named by `AskTimeout` (default `timeout`).

        Raises:
            JobFailed, ResultExpired: as `outcome_value`.
            AskTimeout: the job did not end in time (it goes on).
        """
        outcome = await self.outcome(job_id, timeout)
        if outcome is None or outcome.state not in TERMINAL_STATES:
            raise timed_out(job_id, timeout if asked is None else asked, outcome)
        return outcome_value(outcome)

    def _read(self, job_id: str, fut: "asyncio.Future[JobResult] | None") -> None:
        def read(outcome: Any, error: BaseException | None) -> None:
            if error is not None:  # the journal is out of reach: the next read tries again
                logger.debug("reading the outcome of job %s failed: %s", job_id, error)
                return
            if job_id in self.watched:
                self._last[job_id] = outcome
            if outcome is not None and outcome.state in TERMINAL_STATES:
                if fut is not None and not fut.done():
                    fut.set_result(outcome)
                self.resolve(outcome)

        try:
            self._submit(jw.CALL, lambda journal: journal.result(job_id), read)
        except Exception as exc:  # no writer runs (the node is restarting its core): read again later
            logger.debug("cannot read the outcome of job %s now: %s", job_id, exc)


def done_ids(payload: str | None) -> set[str] | None:
    """The job ids a done notification names (PostgreSQL's done channel, see `channel_of`).

    Returns:
        The ids; None when it names none in particular: an empty payload (too many to
        name), None (the listener reconnected: some may have been missed), or one that
        is not a JSON array of strings (not ours; every waiter reads again, which is safe).
    """
    if not payload:
        return None
    try:
        ids = json.loads(payload)
    except ValueError:
        return None
    if type(ids) is not list or not all(type(i) is str for i in ids):
        return None
    return set(ids)


class DoneWatch:
    """Wakes the result waiters of a process without a node from PostgreSQL's done channel.

    One thread (a `Listener`) holds one connection that LISTENs on the journal's done
    channel; each notification names the jobs a transaction moved to a final state
    (`done_ids`), and the waiters of those jobs are woken to read the journal again.
    After a (re)connect every waiter is woken: notifications may have been missed. A
    waiter registers *before* its first read, so a job that ends after that read is
    always announced to it (or to everyone, on a reconnect).

    Args:
        url: the journal's ``postgresql://`` URL.
        schema: the journal's schema.
    """

    def __init__(self, url: str, schema: str) -> None:
        from actorq.journal.postgres import Listener, channel_of  # loads psycopg: PostgreSQL only

        self._lock = threading.Lock()
        self._waiters: dict[str, dict[int, Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self.wakes = 0
        """Waiters woken so far (a test signal)."""
        self._listener = Listener(url, None, schema=schema, channels={channel_of(schema, "done"): self._on_done},
                                  application_name="actorq result waiter")
        self.connected = self._listener.connected
        """Set while the LISTEN is in place (a test signal)."""

    @property
    def waiting(self) -> int:
        """How many waiters are registered (a test signal)."""
        with self._lock:
            return sum(len(waiting) for waiting in self._waiters.values())

    def start(self) -> None:
        """Start listening (a thread of its own). Idempotent; returns at once."""
        self._listener.start()

    def stop(self) -> None:
        """Stop listening; returns once the thread has ended. Idempotent."""
        self._listener.stop()

    def add(self, job_id: str, wake: Callable[[], None]) -> tuple[str, int]:
        """Call `wake()` (on the listening thread: keep it short) whenever job `job_id` may have
        ended; returns the token that `remove` takes."""
        token = next(self._tokens)
        with self._lock:
            self._waiters.setdefault(job_id, {})[token] = wake
        return job_id, token

    def remove(self, token: tuple[str, int]) -> None:
        """Stop waking the waiter `token` names."""
        job_id, number = token
        with self._lock:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.pop(number, None)
                if not waiting:
                    del self._waiters[job_id]

    def _on_done(self, payload: str | None) -> None:
        ids = done_ids(payload)
        with self._lock:
            if ids is None:
                wakes = [w for waiting in self._waiters.values() for w in waiting.values()]
            else:
                wakes = [w for job_id in ids if job_id in self._waiters for w in self._waiters[job_id].values()]
        self.wakes += len(wakes)
        for wake in wakes:
            wake()
