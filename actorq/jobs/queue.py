"""`QueueRef`: send jobs the way actors are messaged.

``queue.tell(job)`` returns the job's id at once; the job is handed to the
journal writer and committed in its next group. It is *not yet durable* when
`tell` returns: if the node dies before that commit, the job is gone. Use it
where the caller can re-send (the id makes a re-send idempotent).

``await queue.enqueue(job)`` returns the id only after the commit: from then
on the job survives a crash of any process (and, with ``synchronous=FULL``,
a power loss). A job is *accepted* exactly when `enqueue` returns.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol, Sequence

from actorq.errors import NotCommitted, QueueFull
from actorq.jobs import backpressure
from actorq.jobs import journal_writer as jw
from actorq.jobs.results import ResultWaiters, discarded, timed_out
from actorq.jobs.task import DEFAULT_MAX_PAYLOAD, Declared, Job
from actorq.journal.protocol import NewJob

__all__ = ["Enqueuer", "QueueRef"]


class Enqueuer(Protocol):
    """What a queue ref sends jobs to: a `JournalWriter`, or the node's current one."""

    def enqueue(self, job: NewJob, callback: jw.Callback | None = None) -> None:
        """Queue one job insert; `callback(result, error)` after its group commits."""


def _undeclared(_task: str) -> None:
    return None


class QueueRef:
    """A ref to one named queue of a node, or to each task's own queue.

    A job's priority and max_attempts default to its task's declared ones (and,
    on a ref with no name, its queue too), unless the job sets them.

    Args:
        name: the queue name; None sends each job to its task's declared queue.
        writer: the node's journal writer (or anything that forwards to it).
        loop: the node's loop.
        max_payload: the largest encoded arguments accepted (they must fit in one frame).
        declared: a task's declaration by task name (None for a task it does not know).
        waiters: the node's result waiters (`ask`); None: this ref cannot ask.
    """

    __slots__ = ("name", "_writer", "_loop", "_max_payload", "_declared", "_waiters")

    def __init__(self, name: str | None, writer: "Enqueuer", loop: asyncio.AbstractEventLoop,
                 max_payload: int = DEFAULT_MAX_PAYLOAD,
                 declared: Callable[[str], Declared | None] = _undeclared,
                 waiters: ResultWaiters | None = None) -> None:
        self.name = name
        self._writer = writer
        self._loop = loop
        self._max_payload = max_payload
        self._declared = declared
        self._waiters = waiters

    def __repr__(self) -> str:
        return f"<QueueRef {self.name!r}>" if self.name is not None else "<QueueRef (each task's own queue)>"

    def _row(self, job: Job) -> NewJob:
        return job.to_new_job(self.name, self._max_payload, self._declared(job.task))

    def tell(self, job: Job) -> str:
        """Send `job` to this queue without waiting for the commit. Safe from any thread.

        Returns:
            The job's id.

        Raises:
            TypeError: an argument cannot be encoded with msgpack (names the argument).
            ValueError: the job is invalid (empty task name, max_attempts < 1, arguments too large).
        """
        self._writer.enqueue(job.to_new_job(self.name, self._max_payload, self._declared(job.task)))
        return job.id

    async def enqueue(self, job: Job, *, block: float = 0.0) -> str | None:
        """Send `job` and return its id once it is committed to the journal (accepted).

        A job whose `unique_key` is held (by a live job, or by one inside its
        ``unique_for`` period) is not added: the id returned is then the holder's
        (compare it with ``job.id`` to tell). A job with ``on_conflict="discard"`` whose
        `concurrency_key` already has its limit of admitted jobs is not added: None is returned.

        `block`: seconds to wait for room while its queue is at its ``max_depth``
        (sending again after short sleeps on the loop); 0 (default): raise at once.

        Raises:
            TypeError, ValueError: as `tell`.
            NotCommitted: the journal could not commit it; it was not accepted. Re-sending
                the same `job` (same id) is safe.
            QueueFull: its queue stayed at its ``max_depth`` for `block` seconds.
        """
        return (await self.enqueue_many([job], block=block))[0]

    async def ask(self, job: Job, timeout: float = 10.0) -> Any:
        """Send `job`, wait for it to end, and return what its task returned.

        The job is durable once sent (as `enqueue`); the wait is pushed by the node's
        journal writer when the job's completion commits, not polled. A job with a held
        `unique_key` is not added: the job holding the key (live, or finished inside its
        ``unique_for`` period) is waited for instead.

        Args:
            job: the job.
            timeout: seconds to wait, from the call, for the commit and the job's end.

        Returns:
            The task's return value, decoded from msgpack (None when it returned None or
            keeps no results).

        Raises:
            TypeError, ValueError: as `tell`.
            NotCommitted: the job was not accepted.
            JobFailed: the job ended dead, failed or cancelled; carries the remote error's
                type, message and traceback text.
            AskTimeout: it did not end within `timeout` (it goes on; fetch its result later
                by id with `actorq.Client.result`).
            RuntimeError: this ref belongs to no node (it cannot wait).
        """
        if self._waiters is None:
            raise RuntimeError("this queue ref cannot ask: it belongs to no running node")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            job_id = await asyncio.wait_for(self.enqueue(job), timeout)
        except asyncio.TimeoutError:
            raise timed_out(job.id, timeout, None) from None
        if job_id is None:
            raise discarded(job)
        return await self._waiters.wait(job_id, max(0.0, deadline - loop.time()), asked=timeout)

    async def enqueue_many(self, jobs: Sequence[Job], *, block: float = 0.0) -> list[str | None]:
        """Send several jobs and return their ids once all are committed.

        `block`: as `enqueue`; the whole batch is sent again (those committed take no room).

        Raises:
            NotCommitted: at least one was not committed (re-send them all: it is idempotent).
            QueueFull: a job's queue stayed at its ``max_depth`` for `block` seconds; the
                others may be committed.
        """
        tries = backpressure.pauses(backpressure.check_block(block))
        while True:
            try:
                return await self._enqueue_many(jobs)
            except QueueFull:
                pause = next(tries, None)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    async def _enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        rows = [self._row(job) for job in jobs]
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        pending = [len(rows)]
        failure: list[BaseException] = []
        ids: dict[str, str | None] = {row.id: row.id for row in rows}

        def done(result: Any, error: BaseException | None, row_id: str) -> None:
            if error is not None:
                failure.append(error)
            elif result is None or isinstance(result, str):
                ids[row_id] = result  # a held unique key: its holder's id; None: discarded
            pending[0] -= 1
            if pending[0] == 0 and not fut.done():
                if loop is self._loop:
                    _resolve(fut, failure)
                else:
                    loop.call_soon_threadsafe(_resolve, fut, failure)

        for row in rows:
            self._writer.enqueue(row, lambda result, error, row_id=row.id: done(result, error, row_id))
        await fut
        return [ids[job.id] for job in jobs]


def _resolve(fut: asyncio.Future[None], failure: list[BaseException]) -> None:
    if fut.done():
        return
    if failure:
        full = next((e for e in failure if isinstance(e, QueueFull)), None)  # refused at max_depth: say so
        fut.set_exception(full or NotCommitted(f"job not committed: {failure[0]}"))
    else:
        fut.set_result(None)
