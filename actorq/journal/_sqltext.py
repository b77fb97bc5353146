"""SQL text both journals share, composed from the protocol's constants.

The state lists are written once, in `actorq.journal.protocol`; every statement
of both dialects that needs one takes it from here. (The migration files keep
their own literal lists: a migration is frozen history.)
"""

from __future__ import annotations

from typing import Iterable

from actorq.journal.protocol import LIVE_STATES, JobState


def states_list(states: Iterable[JobState]) -> str:
    """An SQL list literal of `states`, for ``state IN ...``: ``('ready', 'retry')``."""
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"


LIVE = states_list(LIVE_STATES)
DUE = states_list((JobState.SCHEDULED, JobState.RETRY))  # promoted to ready once run_at has passed
REVIVABLE = states_list((JobState.DEAD, JobState.FAILED))  # what retry_dead takes
CLEAR_LEASE = "lease_id = NULL, lease_owner = NULL, lease_expires = NULL"
