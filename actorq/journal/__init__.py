# The durable queue: the Journal protocol of job state transitions and its backends.
from actorq.journal.protocol import TERMINAL_STATES as TERMINAL_STATES
from actorq.journal.protocol import Failure as Failure
from actorq.journal.protocol import JobInfo as JobInfo
from actorq.journal.protocol import JobState as JobState
from actorq.journal.protocol import Journal as Journal
from actorq.journal.protocol import LeasedJob as LeasedJob
from actorq.journal.protocol import NewJob as NewJob
from actorq.journal.sqlite import SQLiteJournal as SQLiteJournal
from actorq.journal.sqlite import open_journal as open_journal

__all__ = [
    "Failure",
    "JobInfo",
    "JobState",
    "Journal",
    "LeasedJob",
    "NewJob",
    "SQLiteJournal",
    "TERMINAL_STATES",
    "open_journal",
]
