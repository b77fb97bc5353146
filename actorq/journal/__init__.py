# The durable queue: the Journal protocol of job state transitions and its backends.
# Each name loads its module on first use: the PostgreSQL names load psycopg (the optional
# `postgres` extra) only then.
from typing import TYPE_CHECKING

from actorq._exports import lazy_exports as _lazy_exports

if TYPE_CHECKING:
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
    from actorq.journal.postgres import Listener as Listener
    from actorq.journal.postgres import PostgresJournal as PostgresJournal
    from actorq.journal.postgres import enqueue_in as enqueue_in

# every public name, loaded on first use (PEP 562): importing one module of the package
# (`actorq.journal._limits`, say) does not load both backends
_EXPORTS = {
    "migrate": "actorq.journal.backends",
    "open_journal": "actorq.journal.backends",
    "MemoryJournal": "actorq.journal.memory",
    "TERMINAL_STATES": "actorq.journal.protocol",
    "BreakerState": "actorq.journal.protocol",
    "CircuitBreaker": "actorq.journal.protocol",
    "Failure": "actorq.journal.protocol",
    "JobInfo": "actorq.journal.protocol",
    "JobResult": "actorq.journal.protocol",
    "JobState": "actorq.journal.protocol",
    "Journal": "actorq.journal.protocol",
    "KeptResult": "actorq.journal.protocol",
    "LeasedJob": "actorq.journal.protocol",
    "NewJob": "actorq.journal.protocol",
    "QueueLimits": "actorq.journal.protocol",
    "QueueStats": "actorq.journal.protocol",
    "SQLiteJournal": "actorq.journal.sqlite",
    "Listener": "actorq.journal.postgres",
    "PostgresJournal": "actorq.journal.postgres",
    "enqueue_in": "actorq.journal.postgres",
}

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

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
