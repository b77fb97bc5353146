# The durable queue: the Journal protocol of job state transitions and its backends.
# The PostgreSQL names load psycopg (the optional `postgres` extra) on first use only.
from typing import Any

from actorq.journal.backends import migrate as migrate
from actorq.journal.backends import open_journal as open_journal
from actorq.journal.memory import MemoryJournal as MemoryJournal
from actorq.journal.protocol import TERMINAL_STATES as TERMINAL_STATES
from actorq.journal.protocol import BreakerState as BreakerState
from actorq.journal.protocol import CircuitBreaker as CircuitBreaker
from actorq.journal.protocol import Failure as Failure
from actorq.journal.protocol import JobInfo as JobInfo
from actorq.journal.protocol import JobResult as JobResult
from actorq.journal.protocol import JobState as JobState
from actorq.journal.protocol import Journal as Journal
from actorq.journal.protocol import KeptResult as KeptResult
from actorq.journal.protocol import LeasedJob as LeasedJob
from actorq.journal.protocol import NewJob as NewJob
from actorq.journal.protocol import QueueLimits as QueueLimits
from actorq.journal.protocol import QueueStats as QueueStats
from actorq.journal.sqlite import SQLiteJournal as SQLiteJournal

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "Failure",
    "JobInfo",
    "JobResult",
    "JobState",
    "Journal",
    "KeptResult",
    "LeasedJob",
    "Listener",
    "MemoryJournal",
    "NewJob",
    "PostgresJournal",
    "QueueLimits",
    "QueueStats",
    "SQLiteJournal",
    "TERMINAL_STATES",
    "enqueue_in",
    "migrate",
    "open_journal",
]

_POSTGRES_NAMES = ("Listener", "PostgresJournal", "enqueue_in")


def __getattr__(name: str) -> Any:
    if name in _POSTGRES_NAMES:
        from actorq.journal import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module 'actorq.journal' has no attribute {name!r}")
