"""`Client`: add jobs from any process by writing them straight into the journal.

For producers outside the node (a web app, a cron script, ``actorq enqueue``).
Every call commits before it returns, so a returned id means *accepted*. The
node sees the jobs at its scheduler's next tick (``dispatcher.poll_interval``,
0.2 s by default; at once on a journal that notifies, PostgreSQL). SQLite lets
one node and any number of such clients share a file; writes wait up to
``busy_timeout`` for the file lock.

A job's task decides its queue, priority and attempts unless the producer sets
them (`actorq.Task`). The client learns each task's declaration from the
registry it is given, or else from the journal's task catalog, which every node
writes when it starts; a task neither knows gets the defaults.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from actorq.jobs.task import Declared, Job, TaskRegistry
from actorq.journal import open_journal
from actorq.journal.config import (
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CONNECT_RETRY_FOR, DEFAULT_SCHEMA, DEFAULT_SYNCHRONOUS, DEFAULT_URL, JournalConfig,
)
from actorq.journal.protocol import JobInfo

__all__ = ["Client"]

DECLARATIONS_TTL = 10.0
"""Seconds a client trusts a task declaration it read from the journal's task catalog."""


class Client:
    """A synchronous producer on a journal URL.

    Args:
        url: the journal, e.g. ``sqlite:///actorq.db`` or ``postgresql://user@host/db``.
        synchronous: SQLite durability level (``full`` by default).
        busy_timeout: SQLite: seconds to wait for the node's write lock.
        schema: PostgreSQL: the journal's schema (default ``actorq``).
        connect_retry_for: PostgreSQL: seconds an unreachable server is retried (default 30).
        tasks: the task registry (or ``{name: declaration}``) whose declared queue,
            priority and attempts apply to jobs of its tasks; without it the journal's
            task catalog (written by nodes at start) is asked, at most once every
            `DECLARATIONS_TTL` seconds per task.
        create: False: a journal that does not exist yet is an error instead of being
            created (for a client that only reads).

    Raises:
        JournalError: the journal cannot be opened (or, with `create` False, does not exist).
    """

    def __init__(self, url: str = DEFAULT_URL, *, synchronous: str = DEFAULT_SYNCHRONOUS,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT, schema: str = DEFAULT_SCHEMA,
                 connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
                 tasks: TaskRegistry | Mapping[str, Declared] | None = None, create: bool = True) -> None:
        self._journal = open_journal(url, synchronous=synchronous, busy_timeout=busy_timeout, schema=schema,
                                     connect_retry_for=connect_retry_for, create=create)
        self._tasks: Mapping[str, Declared] | None = tasks.policies() if isinstance(tasks, TaskRegistry) else tasks
        self._catalog: dict[str, Declared] = {}  # the task catalog's declarations read so far
        self._catalog_read: dict[str, float] = {}  # task name -> when its declaration was read

    @classmethod
    def from_config(cls, config: JournalConfig, *, tasks: TaskRegistry | Mapping[str, Declared] | None = None,
                    create: bool = True) -> "Client":
        """A client on the journal a ``[journal]`` section describes, with every setting of it
        a client uses (a relative SQLite path is the CWD's).

        Raises:
            JournalError: as the constructor.
        """
        return cls(config.resolved_url, synchronous=config.synchronous, busy_timeout=config.busy_timeout,
                   schema=config.schema, connect_retry_for=config.connect_retry_for, tasks=tasks, create=create)

    def enqueue(self, job: Job, queue: str | None = None) -> str:
        """Commit one job and return its id (accepted).

        Args:
            job: the job.
            queue: the queue; None (default): its task's declared queue.

        Raises:
            TypeError: an argument cannot be encoded (names the argument).
            JournalError: the commit failed; the job was not accepted (re-send is safe).
        """
        return self.enqueue_many([job], queue)[0]

    def enqueue_many(self, jobs: Sequence[Job], queue: str | None = None) -> list[str]:
        """Commit several jobs in one transaction and return their ids.

        For a job whose `unique_key` a live job already holds, nothing is added and the
        id returned is the holder's.
        """
        declared = self._declared({job.task for job in jobs})
        rows = [job.to_new_job(queue, declared=declared.get(job.task)) for job in jobs]
        keys = [row.unique_key for row in rows if row.unique_key is not None]
        if not keys:  # one statement (PostgreSQL: one round trip)
            self._journal.enqueue(rows)
            return [row.id for row in rows]
        with self._journal.transaction():
            self._journal.enqueue(rows)
            holders = self._journal.holders(keys)
        return [holders.get(row.unique_key, row.id) if row.unique_key else row.id for row in rows]

    def _declared(self, names: set[str]) -> Mapping[str, Declared]:
        """The declarations of `names`: the registry's, or the task catalog's, read at most once
        every `DECLARATIONS_TTL` seconds per task (nodes rewrite it only when they start)."""
        if self._tasks is not None:
            return self._tasks
        now = time.monotonic()
        stale = sorted(n for n in names if self._catalog_read.get(n, -DECLARATIONS_TTL) <= now - DECLARATIONS_TTL)
        if stale:
            found = self._journal.declared_tasks(stale)
            for name in stale:
                self._catalog_read[name] = now
                if name in found:
                    self._catalog[name] = found[name]
                else:
                    self._catalog.pop(name, None)
            if len(self._catalog_read) > 10_000:  # bounded: a client sending many task names
                self._catalog_read.clear()
        return self._catalog

    def get(self, job_id: str) -> JobInfo | None:
        """Return one job's state and recorded errors, or None."""
        return self._journal.get(job_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}``."""
        return self._journal.counts()

    def close(self) -> None:
        """Close the journal connection. Idempotent."""
        self._journal.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
