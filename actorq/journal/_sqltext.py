"""SQL both journals share: the names of their statements, and text composed from the protocol.

Each dialect's table of statements (`_sqlitesql`, `_pgsql`) extends `JobStatements`,
so a statement that does the same job has the same name in both. The state lists
are written once, in `actorq.journal.protocol`; every statement of both dialects
that needs one takes it from here. (The migration files keep their own literal
lists: a migration is frozen history.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from actorq.journal.protocol import ADMITTED_STATES, LIVE_STATES, JobState


STATE_MARK = "STATE_LITERAL"
"""Where a listing statement names its one state: `for_state` puts the state there as a
literal, so that the planner can prove a partial index covers it (a bound parameter is
not proven: PostgreSQL's generic plans, SQLite's prepared statements)."""

INDEXED_STATES = (JobState.BLOCKED, JobState.SCHEDULED, JobState.RETRY, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)
"""The states the operator's index (state, queue) holds: rare in a journal in service, so
the index costs the hot path nothing (a job goes ready -> leased -> succeeded without
touching it). The others are listed in id order from the primary key (ready, succeeded:
the many) or from the leased jobs' own index (leased: at most the workers' credits)."""


def for_state(statement: str, state: JobState) -> str:
    """`statement` with its `STATE_MARK` replaced by `state` as an SQL literal."""
    return statement.replace(STATE_MARK, f"'{JobState(state).value}'")


def listing_reads(sql: "JobStatements", states: Iterable[JobState], queue: str | None,
                  queues_in: Callable[[str], list[str]]) -> Iterator[tuple[str, str | None]]:
    """The reads of one `Journal.list_jobs` page: ``(statement, queue)`` for each range it takes
    (each statement then binds queue, cursor, task and limit).

    An indexed state gives one range per queue (`queue`, or each queue `queues_in` returns for
    the statement listing that state's queues); leased jobs one read of their own index; ready
    and succeeded one read of the primary key, filtered by `queue` if given.
    """
    for state in states:
        if state not in INDEXED_STATES:
            yield (sql.list_leased if state is JobState.LEASED else for_state(sql.list_many, state)), queue
            continue
        page = for_state(sql.list_page, state)
        for name in [queue] if queue is not None else queues_in(for_state(sql.queues_in_state, state)):
            yield page, name


def states_list(states: Iterable[JobState]) -> str:
    """An SQL list literal of `states`, for ``state IN ...``: ``('ready', 'retry')``."""
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"


LIVE = states_list(LIVE_STATES)
ADMITTED = states_list(ADMITTED_STATES)


def admitted_of_key(jobs: str, key: str) -> str:
    """How many jobs of the flow key `key` (an SQL expression) are admitted (table `jobs`)."""
    return f"(SELECT count(*) FROM {jobs} a WHERE a.flow_key = {key} AND a.state IN {ADMITTED})"
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
    counts: str  # the kept counts (queue, state, n), never the jobs (docs/architecture.md)
    counts_scan: str  # the same counted from the jobs themselves: tests compare the two
    queue_stats: str  # each queue's slots from a first one: finished, failed, leased, waits
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
    admit: str  # fill flow keys' free slots from their blocked jobs (docs/flow-control-keys.md)
    queues_in_state: str  # the distinct queues holding jobs of one state (a skip scan of the index)
    list_page: str  # one (state, queue) range of jobs of an indexed state from a cursor, in id order
    list_many: str  # jobs of ready or succeeded from a cursor, in id order (the primary key)
    list_leased: str  # leased jobs from a cursor, in id order (their own index)
    list_all: str  # jobs from a cursor in id order (the primary key)
    inspect: str  # every column of one job
    inspect_errors: str  # its error rows: attempt, time, text, oldest first
    oldest_ready: str  # each queue's earliest ready job's created_at
    clear_queue: str  # delete a batch of one queue's jobs of one waiting state

