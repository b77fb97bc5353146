"""The SQLite journal's statements: one named text each, written once.

The names are those of `_sqltext.JobStatements`, shared with the PostgreSQL
journal's statements; `fail_error` is SQLite's own (PostgreSQL writes the error
rows in the `fail` statement itself). Every value is a bound
parameter (``?`` or ``?N``); times are the journal's clock, passed in by the caller.

A statement whose number of placeholders follows the batch (an ``IN`` list, the
rows of a multi-row ``VALUES``) holds a ``{marks}`` slot, filled per chunk with
`in_list` or `values_rows`; the texts of one chunk size repeat, so sqlite3's
statement cache keeps them prepared.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorq.journal._sqltext import CLEAR_LEASE, DUE, LIVE, REVIVABLE, STATE_MARK, JobStatements, admitted_of_key

IN_CHUNK = 500  # values per IN list; far below SQLite's limit of 32,766 bound parameters
ENQUEUE_COLUMNS = 16  # bound values per row of `enqueue`
RESULT_COLUMNS = 4  # bound values per row of `complete_with_result`


@dataclass(frozen=True)
class Statements(JobStatements):
    """Every statement of the SQLite journal: `JobStatements` and SQLite's own."""

    fail_error: str  # the error row of an accepted `fail` (PostgreSQL writes it inside `fail`)
    prune_errors: str  # the error rows of pruned jobs (PostgreSQL deletes them inside `prune`)
    blocked_keys: str  # which of some flow keys have a blocked job
    lease_slot: str  # add one queue's leases and their waits to the slot of now (PostgreSQL: a trigger)
    drop_slots: str  # the slots older than the kept hour (PostgreSQL: actorq_fold_figures)
    fold_slots: str  # the finishes of those slots into their counts' slot 0
    drop_lease_slots: str  # the lease slots older than the kept hour
    stale_slots: str  # whether there are any of those


def in_list(count: int) -> str:
    """The ``{marks}`` of an ``IN ({marks})`` list of `count` values: ``?,?,?``."""
    return ",".join("?" * count)


def numbered_list(count: int, first: int = 2) -> str:
    """The ``{marks}`` of an ``IN ({marks})`` list of `count` numbered values from `first`:
    ``?2,?3,?4``; a statement may name them more than once."""
    return ",".join(f"?{n}" for n in range(first, first + count))


def values_rows(count: int, columns: int = ENQUEUE_COLUMNS) -> str:
    """The ``{marks}`` of a multi-row ``VALUES {marks}``: `count` rows of `columns` placeholders."""
    return ",".join(["(" + ", ".join("?" * columns) + ")"] * count)


# The current leases read back as `Attempt` rows, by what selects them.
_ATTEMPTS = "SELECT id, lease_id, task, attempts, max_attempts FROM actorq_jobs WHERE state = 'leased' AND "

# A listing's columns (`JobSummary`), without the payload, result or traceback.
_SUMMARY = ("id, queue, task, state, priority, attempts, max_attempts, run_at, created_at, finished_at,"
            " lease_owner, last_error")

_TEXT = {
    # Multi-row VALUES: 2.7 us a job against 5.6 us with executemany (100k jobs, 250 a commit).
    # A key inside another row's unique_until period is skipped here (column9 is the row's
    # created_at, now); ON CONFLICT DO NOTHING: a re-sent id, or a unique key a live job holds,
    # is a no-op; a CHECK failure still raises.
    "enqueue": (
        "INSERT INTO actorq_jobs (id, queue, task, payload, state, priority, run_at,"
        " max_attempts, created_at, unique_key, timeout, unique_until, flow_key, flow_limit)"
        " SELECT column1, column2, column3, column4,"
        # a keyed job (column13) is admitted at once when no job of its key waits blocked and
        # its key's admitted jobs plus the jobs of its key before it in the batch (column16)
        # are under its limit; else blocked. The subqueries read the table as it was before the
        # statement (SQLite fills the rows of an INSERT that reads its own table before it
        # inserts one): see `_limits.key_ordinals`.
        "  CASE WHEN column13 IS NULL THEN column5"
        "  WHEN NOT EXISTS (SELECT 1 FROM actorq_jobs b"
        "   WHERE b.flow_key = v.column13 AND b.state = 'blocked')"
        f"   AND {admitted_of_key('actorq_jobs', 'v.column13')} + v.column16 < v.column14 THEN column5"
        "  ELSE 'blocked' END,"
        " column6, column7, column8, column9, column10, column11, column12, column13, column14"
        " FROM (VALUES {marks}) AS v"
        " WHERE (v.column10 IS NULL OR NOT EXISTS (SELECT 1 FROM actorq_jobs p"
        "  WHERE p.unique_key = v.column10 AND p.unique_until > v.column9))"
        # column15: 1 when the job is not added once its key has flow_limit admitted jobs
        # (on_conflict="discard"); such a job comes alone in its statement
        f" AND (v.column15 = 0 OR {admitted_of_key('actorq_jobs', 'v.column13')} < v.column14)"
        " ON CONFLICT DO NOTHING"
    ),
    # ?1 now, then the keys ({marks}: `numbered_list`, used twice): rows inside their period,
    # then the live holder, which wins when both are there (`live` orders them)
    "holders": (
        "SELECT unique_key, id, 0 AS live FROM actorq_jobs WHERE unique_key IN ({marks}) AND unique_until > ?1"
        f" UNION ALL SELECT unique_key, id, 1 FROM actorq_jobs WHERE unique_key IN ({{marks}}) AND state IN {LIVE}"
        " ORDER BY live"
    ),
    # ?1 a JSON array of flow keys, ?2 now: each key's earliest blocked jobs, up to its free slots
    # (the limit of its earliest blocked job less its admitted jobs), made ready (or scheduled),
    # in id order, by one statement for every key. SQLite's LIMIT cannot name a row of the
    # outer query, so each key's picks are walked on actorq_jobs_flow one step at a time (a
    # recursive CTE): a key's backlog is never read past its free slots. An UPDATE per key
    # cost 40 us (the statement, its triggers and its undo journal): 1,000 keys with a
    # backlog ran at a fifth of the rate of no keys. A key with no blocked job admits none.
    "admit": (
        "WITH RECURSIVE k(key) AS (SELECT value FROM json_each(?1)),"
        " room(key, n) AS MATERIALIZED (SELECT k.key, coalesce((SELECT b.flow_limit FROM actorq_jobs b"
        "  WHERE b.flow_key = k.key AND b.state = 'blocked' ORDER BY b.id LIMIT 1), 0)"
        f"  - {admitted_of_key('actorq_jobs', 'k.key')} FROM k),"
        " pick(key, id, left) AS ("
        "  SELECT room.key, (SELECT b.id FROM actorq_jobs b WHERE b.flow_key = room.key AND b.state = 'blocked'"
        "   ORDER BY b.id LIMIT 1), room.n FROM room WHERE room.n > 0"
        "  UNION ALL"
        "  SELECT pick.key, (SELECT b.id FROM actorq_jobs b WHERE b.flow_key = pick.key AND b.state = 'blocked'"
        "   AND b.id > pick.id ORDER BY b.id LIMIT 1), pick.left - 1 FROM pick WHERE pick.left > 1 AND pick.id IS NOT NULL)"
        " UPDATE actorq_jobs SET state = CASE WHEN run_at > ?2 THEN 'scheduled' ELSE 'ready' END"
        " WHERE id IN (SELECT id FROM pick WHERE id IS NOT NULL)"
        " RETURNING queue, state"
    ),
    # of the keys ({marks}), those with a blocked job
    "blocked_keys": "SELECT DISTINCT flow_key FROM actorq_jobs WHERE state = 'blocked' AND flow_key IN ({marks})",
    # ?1 lease id, ?2 owner, ?3 expiry, then the queues ({marks}), then the limit
    "lease": (
        "UPDATE actorq_jobs SET state = 'leased', attempts = attempts + 1, lease_id = ?,"
        " lease_owner = ?, lease_expires = ?"
        " WHERE id IN (SELECT id FROM actorq_jobs WHERE state = 'ready' AND queue IN ({marks})"
        # a paused queue leases nothing (a handful of rows: the check costs nothing)
        "  AND queue NOT IN (SELECT queue FROM actorq_paused_queues)"
        "  ORDER BY priority, id LIMIT ?)"
        # run_at: when the job was due, for the queue wait the lease adds to its slot (`lease_slot`)
        " RETURNING id, queue, task, payload, attempts, max_attempts, timeout, run_at"
    ),
    # One statement per lease (a group holds few) with the ids as a bound IN list:
    # 2.3 us a job against 4.9 us for a statement per job (100k jobs, 250 per commit).
    "complete": (
        f"UPDATE actorq_jobs SET state = 'succeeded', finished_at = ?, {CLEAR_LEASE}"
        " WHERE lease_id = ? AND state = 'leased' AND id IN ({marks})"
    ),
    # Jobs that returned values, fenced like `complete`: ?1 the time, then rows of (id, lease
    # id, value, seconds kept) as a multi-row VALUES ({marks}, `RESULT_COLUMNS` each), joined
    # by primary key: one statement per chunk, not one per job.
    "complete_with_result": (
        f"UPDATE actorq_jobs SET state = 'succeeded', finished_at = ?1, {CLEAR_LEASE},"
        " result = v.column3, result_expires = ?1 + v.column4"
        " FROM (VALUES {marks}) AS v"
        " WHERE actorq_jobs.id = v.column1 AND actorq_jobs.lease_id = v.column2 AND actorq_jobs.state = 'leased'"
    ),
    # Stores the caller's decision: ?2 is the retry time (NULL keeps run_at), ?3 the finish
    # time of a final state (NULL otherwise).
    "fail": (
        "UPDATE actorq_jobs SET state = ?1, run_at = coalesce(?2, run_at), finished_at = ?3,"
        f" last_error = ?4, last_traceback = ?7, {CLEAR_LEASE}"
        " WHERE id = ?5 AND lease_id = ?6 AND state = 'leased' RETURNING attempts, task, flow_key"
    ),
    "fail_error": "INSERT INTO actorq_errors (job_id, attempt, at, error) VALUES (?, ?, ?, ?)",
    "release": (
        f"UPDATE actorq_jobs SET state = 'ready', attempts = attempts - 1, {CLEAR_LEASE}"
        " WHERE id = ? AND lease_id = ? AND state = 'leased'"
    ),
    "attempts": _ATTEMPTS + "lease_id = ? AND id IN ({marks})",  # one per lease, as `complete`
    # The kept ids go as one JSON array: any number of them in one bound parameter.
    "leased_by": _ATTEMPTS + "lease_owner = ? AND lease_id NOT IN (SELECT value FROM json_each(?))",
    # substr, not LIKE: '%' and '_' in a node name are plain characters here.
    "leased_with_prefix": _ATTEMPTS + "substr(lease_owner, 1, length(?1)) = ?1",
    "expired": _ATTEMPTS + "lease_expires < ?",
    # the last writer wins: a node starting later replaces what an earlier one declared
    # a task's rules (schema 12): a new bucket starts full, a declared one keeps its tokens (at
    # most the new burst), so a node starting does not hand out a second burst
    "declare_tasks": (
        "INSERT INTO actorq_tasks (name, queue, priority, max_attempts, unique_for, declared_at, concurrency,"
        " rate, per_second, burst, tokens, tokens_at, breaker_failures, breaker_window, breaker_cool_down,"
        " breaker_probes, concurrency_limit, on_conflict)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?6, ?11, ?12, ?13, ?14, ?15, ?16)"
        " ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, priority = excluded.priority,"
        " max_attempts = excluded.max_attempts, unique_for = excluded.unique_for, declared_at = excluded.declared_at,"
        " concurrency = excluded.concurrency, rate = excluded.rate, per_second = excluded.per_second,"
        " burst = excluded.burst, breaker_failures = excluded.breaker_failures,"
        " breaker_window = excluded.breaker_window, breaker_cool_down = excluded.breaker_cool_down,"
        " breaker_probes = excluded.breaker_probes, concurrency_limit = excluded.concurrency_limit,"
        " on_conflict = excluded.on_conflict,"
        " tokens = CASE WHEN actorq_tasks.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens"
        "  ELSE min(actorq_tasks.tokens, excluded.burst) END,"
        " tokens_at = CASE WHEN actorq_tasks.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens_at"
        "  ELSE actorq_tasks.tokens_at END"
    ),
    "declared_tasks": (
        "SELECT name, queue, priority, max_attempts, unique_for, concurrency_limit, on_conflict FROM actorq_tasks"
        " WHERE name IN ({marks})"),
    # a stored schedule keeps its added_at and last_fired: a new definition does not fire again
    # what already fired
    "put_schedules": (
        "INSERT INTO actorq_schedules (name, cron, task, payload, queue, timezone, catch_up, source, added_at,"
        " last_fired) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, task = excluded.task, payload = excluded.payload,"
        " queue = excluded.queue, timezone = excluded.timezone, catch_up = excluded.catch_up,"
        " source = excluded.source"
    ),
    "remove_schedule": "DELETE FROM actorq_schedules WHERE name = ?",
    "schedules": (
        "SELECT name, cron, task, payload, queue, timezone, catch_up, source, added_at, last_fired"
        " FROM actorq_schedules ORDER BY name"
    ),
    # compare-and-set: `IS` matches NULL to NULL (never fired)
    "fire_schedule": "UPDATE actorq_schedules SET last_fired = ? WHERE name = ? AND last_fired IS ?",
    "renew": "UPDATE actorq_jobs SET lease_expires = ? WHERE state = 'leased' AND lease_owner IN ({marks})",
    "promote": f"UPDATE actorq_jobs SET state = 'ready' WHERE state IN {DUE} AND run_at <= ?",
    "has_due": f"SELECT EXISTS (SELECT 1 FROM actorq_jobs WHERE state IN {DUE} AND run_at <= ?)",
    "has_ready": ("SELECT EXISTS (SELECT 1 FROM actorq_jobs WHERE state = 'ready' AND queue IN ({marks})"
                  " AND queue NOT IN (SELECT queue FROM actorq_paused_queues))"),
    "cancel": (
        f"UPDATE actorq_jobs SET state = 'cancelled', finished_at = ?, {CLEAR_LEASE}"
        f" WHERE id = ? AND state IN {LIVE}"
    ),
    "retry_dead": (
        # a keyed job comes back blocked: the admission trigger takes it from there
        "UPDATE actorq_jobs SET state = CASE WHEN flow_key IS NULL THEN 'ready' ELSE 'blocked' END, attempts = 0,"
        f" run_at = ?, finished_at = NULL WHERE id = ? AND state IN {REVIVABLE}"
    ),
    # schema 14: the kept rows (ready and leased jobs under 'ready', final states by slot) and
    # the leased jobs from their own index (at most those in flight), in one statement (one snapshot)
    "counts": (
        "SELECT queue, state, sum(n) FROM (SELECT queue, state, n FROM actorq_counts"
        " UNION ALL SELECT queue, 'ready', -1 FROM actorq_jobs INDEXED BY actorq_jobs_leased WHERE state = 'leased'"
        " UNION ALL SELECT queue, 'leased', 1 FROM actorq_jobs INDEXED BY actorq_jobs_leased WHERE state = 'leased')"
        " GROUP BY queue, state HAVING sum(n) <> 0"
    ),
    "counts_scan": "SELECT queue, state, count(*) FROM actorq_jobs GROUP BY queue, state",
    # ?1 the first slot: the jobs finished from it on (their rows' slots), and the leases
    "queue_stats": (
        "SELECT queue, sum(finished), sum(failed), sum(leased), sum(wait_sum), max(wait_max) FROM ("
        " SELECT queue, n AS finished, CASE WHEN state = 'failed' OR state = 'dead' THEN n ELSE 0 END AS failed,"
        "  0 AS leased, 0.0 AS wait_sum, 0.0 AS wait_max FROM actorq_counts WHERE slot >= ?1"
        " UNION ALL SELECT queue, 0, 0, leased, wait_sum, wait_max FROM actorq_queue_slots WHERE slot >= ?1)"
        " GROUP BY queue"
    ),
    # ?1 queue, ?2 slot, ?3 leases, ?4 their waits summed, ?5 the longest
    "lease_slot": (
        "INSERT INTO actorq_queue_slots (queue, slot, leased, wait_sum, wait_max) VALUES (?1, ?2, ?3, ?4, ?5)"
        " ON CONFLICT (queue, slot) DO UPDATE SET leased = leased + excluded.leased,"
        " wait_sum = wait_sum + excluded.wait_sum, wait_max = max(wait_max, excluded.wait_max)"
    ),
    # ?1 the first slot kept: older finishes folded into slot 0 (their counts stay), old leases dropped
    "fold_slots": (
        "INSERT INTO actorq_counts (queue, state, slot, n) SELECT queue, state, 0, sum(n) FROM actorq_counts"
        " WHERE slot > 0 AND slot < ?1 GROUP BY queue, state ON CONFLICT (queue, state, slot) DO UPDATE SET n = n + excluded.n"
    ),
    "drop_slots": "DELETE FROM actorq_counts WHERE slot > 0 AND slot < ?1",
    "drop_lease_slots": "DELETE FROM actorq_queue_slots WHERE slot < ?1",
    "stale_slots": ("SELECT EXISTS (SELECT 1 FROM actorq_counts WHERE slot > 0 AND slot < ?1)"
                    " OR EXISTS (SELECT 1 FROM actorq_queue_slots WHERE slot < ?1)"),
    "get": (
        "SELECT id, queue, task, state, attempts, max_attempts, run_at, lease_owner, last_error"
        " FROM actorq_jobs WHERE id = ?"
    ),
    # rowid is insertion order; attempt numbers restart after retry_dead
    "errors": "SELECT error FROM actorq_errors WHERE job_id = ? ORDER BY rowid",
    # a second pause keeps the first one's time
    "pause_queue": "INSERT INTO actorq_paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT (queue) DO NOTHING",
    "resume_queue": "DELETE FROM actorq_paused_queues WHERE queue = ?",
    "paused_queues": "SELECT queue FROM actorq_paused_queues ORDER BY queue",
    "cancelled": "SELECT id FROM actorq_jobs WHERE state = 'cancelled' AND id IN ({marks})",
    # ?2 is now: an expired result reads as expired before the sweep removes it
    "result": (
        "SELECT id, state, CASE WHEN result_expires <= ?2 THEN NULL ELSE result END,"
        " coalesce(result_expires <= ?2, 0), last_error, last_traceback FROM actorq_jobs WHERE id = ?1"
    ),
    "expire_results": (
        "UPDATE actorq_jobs SET result = NULL WHERE id IN (SELECT id FROM actorq_jobs"
        " WHERE result IS NOT NULL AND result_expires <= ? LIMIT ?)"
    ),
    # ?1 state, ?2 cutoff (the journal's clock minus the state's age), ?3 limit. A range scan of
    # actorq_jobs_finished (state, finished_at), oldest first: never a full scan, however many
    # rows are kept. Returns whether each job had errors (every accepted `fail` sets last_error),
    # so only those rows cost a lookup in actorq_errors.
    # ?4 now: a finished job whose unique period is still ahead holds its key (unique_for) and is
    # kept until the period ends; such rows are few, and skipping them costs no scan of the others.
    "prune": (
        "DELETE FROM actorq_jobs WHERE id IN (SELECT id FROM actorq_jobs"
        " WHERE state = ?1 AND finished_at < ?2 AND (unique_until IS NULL OR unique_until <= ?4)"
        " ORDER BY finished_at LIMIT ?3)"
        " RETURNING id, last_error IS NOT NULL"
    ),
    "prune_errors": "DELETE FROM actorq_errors WHERE job_id IN ({marks})",
    # -- the operator's reads (actorq jobs / queues). A state is written in as a literal
    # (`for_state`): the partial index actorq_jobs_state_queue (state, queue; the id follows in a
    # WITHOUT ROWID table's index) holds the `INDEXED_STATES` only, and the planner uses it for a
    # state it can see. One index seek per distinct queue of such a state:
    "queues_in_state": (
        f"WITH RECURSIVE q(name) AS (SELECT min(queue) FROM actorq_jobs WHERE state = {STATE_MARK}"
        f" UNION ALL SELECT (SELECT min(queue) FROM actorq_jobs WHERE state = {STATE_MARK} AND queue > q.name)"
        " FROM q WHERE q.name IS NOT NULL) SELECT name FROM q WHERE name IS NOT NULL"
    ),
    # ?1 queue, ?2 the cursor (ids above it), ?3 task or NULL, ?4 limit: a range of the index
    "list_page": (
        f"SELECT {_SUMMARY} FROM actorq_jobs INDEXED BY actorq_jobs_state_queue"
        f" WHERE state = {STATE_MARK} AND queue = ?1 AND id > ?2 AND (?3 IS NULL OR task = ?3) ORDER BY id LIMIT ?4"
    ),
    # ready and succeeded, the many: the primary key from the cursor (?1 queue or NULL, ?2 cursor,
    # ?3 task or NULL, ?4 limit). A page reads on until it has its jobs: at once while they are
    # many, further when they are rare among the others (see docs/operations.md).
    "list_many": (
        f"SELECT {_SUMMARY} FROM actorq_jobs NOT INDEXED WHERE state = {STATE_MARK} AND (?1 IS NULL OR queue = ?1)"
        " AND id > ?2 AND (?3 IS NULL OR task = ?3) ORDER BY id LIMIT ?4"
    ),
    # leased: the leased jobs' own index (at most the workers' credits), sorted
    "list_leased": (
        f"SELECT {_SUMMARY} FROM actorq_jobs INDEXED BY actorq_jobs_leased WHERE state = 'leased'"
        " AND (?1 IS NULL OR queue = ?1) AND id > ?2 AND (?3 IS NULL OR task = ?3) ORDER BY id LIMIT ?4"
    ),
    "list_all": f"SELECT {_SUMMARY} FROM actorq_jobs WHERE id > ?1 AND (?2 IS NULL OR task = ?2) ORDER BY id LIMIT ?3",
    "inspect": (
        "SELECT id, queue, task, state, payload, priority, attempts, max_attempts, run_at, created_at,"
        " finished_at, lease_id, lease_owner, lease_expires, timeout, unique_key, unique_until, last_error,"
        " last_traceback, result, result_expires FROM actorq_jobs WHERE id = ?"
    ),
    "inspect_errors": "SELECT attempt, at, error FROM actorq_errors WHERE job_id = ? ORDER BY rowid",
    # each queue's oldest ready job: ids grow with time, so its smallest id, read from the ready
    # index (queue, priority, id) alone: a skip scan of the queues, then of each queue's
    # priorities, and the first id of each (queue, priority) range; one seek each, where a
    # min(id) over a queue's range read every ready job of it (and its row: 0.29 s at 10^5 ready)
    "oldest_ready": (
        "WITH RECURSIVE q(name) AS (SELECT min(queue) FROM actorq_jobs WHERE state = 'ready'"
        " UNION ALL SELECT (SELECT min(queue) FROM actorq_jobs WHERE state = 'ready' AND queue > q.name)"
        " FROM q WHERE q.name IS NOT NULL),"
        " p(name, pri) AS (SELECT name, (SELECT min(priority) FROM actorq_jobs WHERE state = 'ready'"
        "  AND queue = q.name) FROM q WHERE name IS NOT NULL"
        " UNION ALL SELECT name, (SELECT min(priority) FROM actorq_jobs WHERE state = 'ready' AND queue = p.name"
        "  AND priority > p.pri) FROM p WHERE p.pri IS NOT NULL),"
        " f(name, first) AS (SELECT name, (SELECT id FROM actorq_jobs INDEXED BY actorq_jobs_ready"
        "  WHERE state = 'ready' AND queue = p.name AND priority = p.pri ORDER BY id LIMIT 1)"
        "  FROM p WHERE pri IS NOT NULL)"
        " SELECT name, (SELECT created_at FROM actorq_jobs WHERE id = m.first)"
        " FROM (SELECT name, min(first) AS first FROM f GROUP BY name) m"
    ),
    # ?1 queue, ?2 limit; a waiting state: ready from its own index, scheduled and retry from the
    # operator's; returns whether each job had errors, as `prune`
    "clear_queue": (
        "DELETE FROM actorq_jobs WHERE id IN (SELECT id FROM actorq_jobs"
        f" WHERE state = {STATE_MARK} AND queue = ?1 LIMIT ?2) RETURNING id, last_error IS NOT NULL"
    ),
}

STATEMENTS = Statements(**_TEXT)
"""The SQLite journal's statements (one schema per file: composed once, at import)."""
