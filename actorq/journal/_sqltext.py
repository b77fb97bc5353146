"""SQL both journals share: the names of their statements, and text composed from the protocol.

Each dialect's table of statements (`_sqlitesql`, `_pgsql`) extends `JobStatements`,
so a statement that does the same job has the same name in both. The state lists
are written once, in `actorq.journal.protocol`; every statement of both dialects
that needs one takes it from here. (The migration files keep their own literal
lists: a migration is frozen history.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from actorq.journal.protocol import LIVE_STATES, JobState


def states_list(states: Iterable[JobState]) -> str:
    """An SQL list literal of `states`, for ``state IN ...``: ``('ready', 'retry')``."""
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"


LIVE = states_list(LIVE_STATES)
DUE = states_list((JobState.SCHEDULED, JobState.RETRY))  # promoted to ready once run_at has passed
REVIVABLE = states_list((JobState.DEAD, JobState.FAILED))  # what retry_dead takes
CLEAR_LEASE = "lease_id = NULL, lease_owner = NULL, lease_expires = NULL"


@dataclass(frozen=True)
class JobStatements:
    """The statements every journal has, named after the `Journal` method they serve."""

    enqueue: str
    holders: str
    lease: str
    complete: str
    fail: str
    release: str
    attempts: str
    leased_by: str
    leased_with_prefix: str
    expired: str
    declare_tasks: str
    declared_tasks: str
    put_schedules: str
    remove_schedule: str
    schedules: str
    fire_schedule: str
    renew: str
    promote: str
    has_due: str
    has_ready: str
    cancel: str
    retry_dead: str
    counts: str
    get: str
    errors: str  # a job's error texts, oldest first (for `get`)
    pause_queue: str
    resume_queue: str
    paused_queues: str
    cancelled: str
    complete_with_result: str  # one job's completion that stores its return value
    result: str
    expire_results: str
    prune: str  # one state's finished jobs past their age, oldest first, at most a limit


# -- flow-control keys (docs/flow-control-keys.md) ------------------------------------------
# Lease predicates on the candidate row ``j``, each a step of its own; a row without the key
# passes at its first ``IS NULL`` test and costs nothing more.


def ordering_free(jobs: str) -> str:
    """``j`` has no ordering key, or no earlier live job of its key exists: the key's order.

    The earlier job stays live (ready, leased, retry) until it finishes, so under any
    snapshot the next one of its key is not eligible early."""
    return (f"(j.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM {jobs} p"
            f" WHERE p.ordering_key = j.ordering_key AND p.state IN {LIVE} AND p.id < j.id))")


def leased_of_key(jobs: str, row: str = "j") -> str:
    """How many jobs of `row`'s concurrency key are leased now.

    A row has a lease id exactly while it is leased (every move out of leased clears it:
    `CLEAR_LEASE`); the test is written on ``lease_id``, not ``state``, so that only the
    index of leased keyed rows (``actorq_jobs_concurrency_leased``) can serve it: PostgreSQL's
    planner, whose statistics may count no leased row yet, took the leased rows' own index
    and filtered it by key (a scan of every lease, per candidate)."""
    return (f"(SELECT count(*) FROM {jobs} r"
            f" WHERE r.concurrency_key = {row}.concurrency_key AND r.lease_id IS NOT NULL)")


def live_of_key(jobs: str, key: str) -> str:
    """How many live jobs of the concurrency key `key` (an SQL expression) exist."""
    return f"(SELECT count(*) FROM {jobs} c WHERE c.concurrency_key = {key} AND c.state IN {LIVE})"
