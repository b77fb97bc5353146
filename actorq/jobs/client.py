"""`Client`: add jobs from any process by writing them straight into the journal.

For producers outside the node (a web app, a cron script, ``actorq enqueue``).
Every call commits before it returns, so a returned id means *accepted*. The
node sees the jobs at its scheduler's next tick (``dispatcher.poll_interval``,
0.2 s by default). SQLite lets one node and any number of such clients share a
file; writes wait up to ``busy_timeout`` for the file lock.
"""

from __future__ import annotations

from typing import Sequence

from actorq.jobs.task import Job
from actorq.journal.protocol import JobInfo
from actorq.journal import open_journal

__all__ = ["Client"]


class Client:
    """A synchronous producer on a journal URL.

    Args:
        url: the journal, e.g. ``sqlite:///actorq.db`` or ``postgresql://user@host/db``.
        synchronous: SQLite durability level (``full`` by default).
        busy_timeout: SQLite: seconds to wait for the node's write lock.
        schema: PostgreSQL: the journal's schema (default ``actorq``).

    Raises:
        JournalError: the journal cannot be opened.
    """

    def __init__(self, url: str = "sqlite:///actorq.db", *, synchronous: str = "full", busy_timeout: float = 5.0,
                 schema: str = "actorq") -> None:
        self._journal = open_journal(url, synchronous=synchronous, busy_timeout=busy_timeout, schema=schema)

    def enqueue(self, job: Job, queue: str = "default") -> str:
        """Commit one job to `queue` and return its id (accepted).

        Raises:
            TypeError: an argument cannot be encoded (names the argument).
            JournalError: the commit failed; the job was not accepted (re-send is safe).
        """
        return self.enqueue_many([job], queue)[0]

    def enqueue_many(self, jobs: Sequence[Job], queue: str = "default") -> list[str]:
        """Commit several jobs in one transaction and return their ids.

        For a job whose `unique_key` a live job already holds, nothing is added and the
        id returned is the holder's.
        """
        rows = [job.to_new_job(queue) for job in jobs]
        keys = [row.unique_key for row in rows if row.unique_key is not None]
        with self._journal.transaction():
            self._journal.enqueue(rows)
            holders = self._journal.holders(keys) if keys else {}
        return [holders.get(row.unique_key, row.id) if row.unique_key else row.id for row in rows]

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
