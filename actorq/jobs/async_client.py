"""`AsyncClient`: add jobs from an asyncio service (FastAPI, Starlette, aiohttp) without blocking its loop.

::

    request handler ──await enqueue(job)──▶ AsyncClient ──one thread of its own──▶ Client
         (loop keeps serving)                                                       │
                                                   node's producer endpoint ◀───────┤ (SQLite, a node runs; node_endpoint)
                                                   or the journal itself    ◀───────┘ (no node; PostgreSQL)

Every call runs the same `Client` method on one thread that belongs to this
client, in the order the calls were made; the awaiting task gets its result or
its exception. The event loop never waits on a socket, a file lock or a
database: while a node is slow or gone, the loop goes on serving other
requests, and the call ends within the client's `timeout` with `NotCommitted`
at the latest. A returned id means *accepted* (committed), exactly as with
`Client`.

One `AsyncClient` per process is enough: tasks share it freely. Create it
where it is used (inside the process that runs the loop, after any fork).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from typing import Any, Callable, Mapping, Sequence, TypeVar

from actorq.errors import QueueFull
from actorq.jobs import backpressure
from actorq.jobs.client import DEFAULT_TIMEOUT, Client, check_wait
from actorq.jobs.task import Declared, Job, TaskRegistry
from actorq.jobs.results import POLL_FIRST, PUSHED_POLL, discarded, next_read, outcome_value, time_left, timed_out
from actorq.journal.config import (
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CONNECT_RETRY_FOR, DEFAULT_SCHEMA, DEFAULT_SYNCHRONOUS, DEFAULT_URL,
)
from actorq.journal.protocol import TERMINAL_STATES, JobInfo, JobResult, QueueStats

__all__ = ["AsyncClient"]

NODE_WAIT_THREADS = 16  # results waited for in a node at once; more read the journal (pushed on PostgreSQL)

_T = TypeVar("_T")


class AsyncClient:
    """An asyncio producer on a journal URL; its calls never block the event loop.

    The arguments are `Client`'s. The journal (or the node's endpoint) is opened on
    the client's own thread at the first call, so constructing one does no I/O.

    Usage::

        client = AsyncClient("sqlite:///actorq.db")
        job_id = await client.enqueue(Job("emails.send", ["a@example.com"]))
        ...
        await client.close()        # or: async with AsyncClient(...) as client:
    """

    def __init__(self, url: str = DEFAULT_URL, *, synchronous: str = DEFAULT_SYNCHRONOUS,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT, schema: str = DEFAULT_SCHEMA,
                 connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
                 tasks: TaskRegistry | Mapping[str, Declared] | None = None, create: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, via_node: bool = True, node_endpoint: str | None = None,
                 result_poll: float = PUSHED_POLL) -> None:
        self._open = functools.partial(
            Client, url, synchronous=synchronous, busy_timeout=busy_timeout, schema=schema,
            connect_retry_for=connect_retry_for, tasks=tasks, create=create, timeout=timeout, via_node=via_node,
            node_endpoint=node_endpoint, result_poll=result_poll)
        self._client: Client | None = None
        # one thread: the calls reach the Client one at a time, in the order they were made
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="actorq-client")
        # waits in a node block a thread each: a few of their own, never the client's thread
        self._wait_threads = concurrent.futures.ThreadPoolExecutor(max_workers=NODE_WAIT_THREADS,
                                                                   thread_name_prefix="actorq-wait")
        self._node_waits = 0
        self._closed = False

    async def _call(self, method: Callable[[Client], _T]) -> _T:
        if self._closed:
            raise RuntimeError("the AsyncClient is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._on_thread, method)

    def _on_thread(self, method: Callable[[Client], _T]) -> _T:
        if self._client is None:
            self._client = self._open()
        return method(self._client)

    async def enqueue(self, job: Job, queue: str | None = None, *, block: float = 0.0) -> str | None:
        """Commit one job and return its id (accepted); as `Client.enqueue` (a `block`
        waits on the loop, not on the client's thread).

        Raises:
            TypeError: an argument cannot be encoded (names the argument).
            JournalError, NotCommitted: the job was not accepted (re-sending it is safe).
            QueueFull: its queue stayed at its ``max_depth`` for `block` seconds.
        """
        return (await self.enqueue_many([job], queue, block=block))[0]

    async def enqueue_many(self, jobs: Sequence[Job], queue: str | None = None, *,
                           block: float = 0.0) -> list[str | None]:
        """Commit several jobs and return their ids, in order; as `Client.enqueue_many`."""
        jobs = list(jobs)
        tries = backpressure.pauses(backpressure.check_block(block))
        while True:
            try:
                return await self._call(lambda client: client.enqueue_many(jobs, queue))
            except QueueFull:
                pause = next(tries, None)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    async def ask(self, job: Job, queue: str | None = None, *, timeout: float = 10.0) -> Any:
        """Enqueue `job`, wait for it to end, and return its value; as `Client.ask` (the
        wait sleeps on the loop)."""
        check_wait(timeout)
        deadline = time.monotonic() + timeout
        job_id = await self.enqueue(job, queue)
        if job_id is None:
            raise discarded(job)
        return await self.result(job_id, time_left(deadline, job_id, timeout))

    async def result(self, job_id: str, timeout: float = 10.0) -> Any:
        """Wait for the job `job_id` to end and return its value; as `Client.result`.

        Pushed as `Client.result` is: through the node enqueues go to (the wait blocks one
        of `NODE_WAIT_THREADS` threads of this client, never its own; more waits at once
        read the journal instead), or, on PostgreSQL,
        woken by the done channel's NOTIFY; else it polls with the same backoff. Between
        reads it sleeps on the loop, and the client's thread stays free for other calls.
        """
        check_wait(timeout)
        loop = asyncio.get_running_loop()
        client = await self._call(lambda client: client)
        deadline = time.monotonic() + timeout
        answered, outcome = False, None
        if self._node_waits < NODE_WAIT_THREADS:  # else a thread would be waited for: read the journal
            self._node_waits += 1
            try:
                answered, outcome = await loop.run_in_executor(self._wait_threads, client.wait_via_node, job_id,
                                                               deadline)
            finally:
                self._node_waits -= 1
        if not answered:
            outcome = await self._wait_in_journal(client, job_id, deadline)
        if outcome is None or outcome.state not in TERMINAL_STATES:
            raise timed_out(job_id, timeout, outcome)
        return outcome_value(outcome)

    async def _wait_in_journal(self, client: Client, job_id: str, deadline: float) -> JobResult | None:
        loop = asyncio.get_running_loop()
        watch = await self._call(lambda client: client.done_watch())
        woken = asyncio.Event()
        token = watch.add(job_id, lambda: loop.call_soon_threadsafe(woken.set)) if watch is not None else None
        delay = POLL_FIRST
        try:
            while True:
                woken.clear()
                outcome = await self._call(lambda client: client.outcome(job_id))
                if outcome is not None and outcome.state in TERMINAL_STATES:
                    return outcome
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return outcome
                wait, delay = next_read(watch, client.result_poll, delay, remaining)
                try:
                    await asyncio.wait_for(woken.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            if watch is not None and token is not None:
                watch.remove(token)

    async def get(self, job_id: str) -> JobInfo | None:
        """One job's state and recorded errors, or None."""
        return await self._call(lambda client: client.get(job_id))

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}``."""
        return await self._call(lambda client: client.counts())

    async def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """`Client.queue_stats`: what each queue did over the last `window` seconds."""
        return await self._call(lambda client: client.queue_stats(window))

    async def cancel(self, job_id: str) -> bool:
        """`Client.cancel`: cancel a job that has not finished (True if cancelled now)."""
        return await self._call(lambda client: client.cancel(job_id))

    async def pause_queue(self, queue: str) -> bool:
        """`Client.pause_queue`: no node leases from `queue` until resumed (True if it was running)."""
        return await self._call(lambda client: client.pause_queue(queue))

    async def resume_queue(self, queue: str) -> bool:
        """`Client.resume_queue`: let `queue` lease again (True if it was paused)."""
        return await self._call(lambda client: client.resume_queue(queue))

    async def paused_queues(self) -> list[str]:
        """`Client.paused_queues`: the paused queues' names, sorted."""
        return await self._call(lambda client: client.paused_queues())

    async def close(self) -> None:
        """Close the connection once the calls made before have ended. Idempotent."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._client is not None:
                self._client.close()

        await asyncio.get_running_loop().run_in_executor(self._thread, shut)
        self._thread.shutdown(wait=False)
        self._wait_threads.shutdown(wait=False)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
