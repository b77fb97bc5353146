"""The PostgreSQL journal's statements, composed once per schema.

Names are quoted with `psycopg.sql.Identifier`; every value is a bound
parameter (``%(name)s``). Batches travel as arrays and are unpacked with
``unnest``: one statement, one round trip, for any batch size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from psycopg import sql

from actorq.journal._sqltext import CLEAR_LEASE, DUE, LIVE, REVIVABLE, STATE_MARK, JobStatements, admitted_of_key
from actorq.journal.config import check_schema
from actorq.journal.protocol import STATS_SLOT

def _epoch(column: str) -> str:
    """`column` (a timestamptz) as Unix seconds, float8; NULL stays NULL, 'infinity' reads as inf."""
    return f"extract(epoch FROM {column})::float8"


# A listing's columns (`JobSummary`), without the payload, result or traceback.
_SUMMARY = ("id, queue, task, state, priority, attempts, max_attempts, " + _epoch("run_at") + ", "
            + _epoch("created_at") + ", " + _epoch("finished_at") + ", lease_owner, last_error")

# A lease of `lease_for` seconds by the database's clock; math.inf never expires.
_EXPIRY = ("CASE WHEN %(lease_for)s::float8 = 'Infinity' THEN 'infinity'::timestamptz"
           " ELSE now() + make_interval(secs => %(lease_for)s::float8) END")
# The lock a key (unique or flow) takes: one of 1,024 per lock space. The migrations' functions
# (014, 015, 017) compute the same expression for flow keys.
LOCK_BUCKETS = 1024
LOCK_BUCKET = "(hashtext({key}) & 1023)"

# One NOTIFY per queue that got ready jobs (rows of `source` with a `queue` column):
# at most one per queue and batch, since NOTIFY serialises commits.
_NOTIFY = ("(SELECT count(*) FROM (SELECT pg_notify(%(channel)s, d.queue)"
           " FROM (SELECT DISTINCT queue FROM {source}) d) n)")


# One NOTIFY per 200 jobs that reached a final state (ids of `source`'s `id` column), payload
# a JSON array of their ids: a waiting client re-reads only its own. 200 ids of 32 characters
# take ~7.2 kB; a chunk over PostgreSQL's 8,000-byte limit (long producer-chosen ids) is sent
# empty, read as "re-read every job you wait for". No row: no NOTIFY.
DONE_IDS_PER_NOTIFY = 200
MAX_PAYLOAD_BYTES = 7999
_NOTIFY_DONE = ("(SELECT count(pg_notify(%(done_channel)s,"
                f" CASE WHEN octet_length(c.ids) <= {MAX_PAYLOAD_BYTES} THEN c.ids ELSE '' END))"
                " FROM (SELECT json_agg(f.id)::text AS ids FROM (SELECT id,"
                f" (row_number() OVER () - 1) / {DONE_IDS_PER_NOTIFY} AS chunk FROM {{source}}) f"
                " GROUP BY f.chunk) c)")


def side_channel(schema: str, purpose: str) -> str:
    """The NOTIFY channel of `schema` for `purpose` (``done``, ``cancel``): ``<schema>.<purpose>``.

    A dot is in no schema name, so it never meets a schema's own channel (the schema's name);
    a name over PostgreSQL's 63 bytes keeps the schema's start and a hash of all of it.
    """
    name = f"{schema}.{purpose}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(schema.encode()).hexdigest()[:8]
    return f"{schema[:63 - len(purpose) - 10]}~{digest}.{purpose}"


@dataclass(frozen=True)
class Statements(JobStatements):
    """Every statement of one schema, rendered to text once: `JobStatements` and PostgreSQL's own."""

    schema: str
    channel: str
    done_channel: str
    """Where the transactions that move jobs to a final state NOTIFY their ids (JSON array)."""
    cancel_channel: str
    """Where a cancel NOTIFYs the cancelled job's id (nodes stop it at once)."""
    migrations_table: str
    lease_queues: str
    privileges: str
    lead: str
    resign: str
    lock_keys: str
    lock_flow: str  # an enqueue's flow keys, exclusive; sorts off for the insert that follows
    sort_restore: str  # enable_sort back as `lock_flow` found it
    enqueue_restore: str  # `enqueue`, then enable_sort back as `lock_flow` found it
    fold_figures: str  # the count deltas into the totals, past slots into one row each (`maintain`)


# Rows another node may hold locked (it is rescuing them, or its session is paused inside a
# transaction) are skipped, never waited for, and taken in id order: statements of two nodes
# never wait on each other in a cycle. The acked, failed and released pairs that were skipped
# come back as "busy" (current by the statement's snapshot, but locked): the caller tries them
# again once the other transaction has ended, when they are either done or stale.
_PAIRS = "unnest(%(ids)s::text[], %(lease_ids)s::int8[]) AS a(id, lease_id)"
_CURRENT = "j.id = a.id AND j.lease_id = a.lease_id AND j.state = 'leased'"
# the pairs of `a` current by the snapshot and not in `got`: locked by another transaction
_BUSY = (f"ARRAY(SELECT a.id FROM {{jobs}} j, a WHERE {_CURRENT} AND a.id NOT IN (SELECT id FROM got))")


def _attempts(where: str, source: str = "") -> str:
    # FOR UPDATE: the caller's fail() in the same transaction answers these very leases.
    return ("SELECT j.id, j.lease_id, j.task, j.attempts, j.max_attempts FROM {jobs} j" + source
            + f" WHERE j.state = 'leased' AND {where} ORDER BY j.id FOR UPDATE OF j SKIP LOCKED")


def _settle_pairs(update: str, notify_done: bool = False) -> str:
    """Apply `update` (``SET ...``) to the current leases among the pairs; returns (count, busy ids)
    and, with `notify_done`, the number of NOTIFYs of the jobs it finished."""
    return (f"WITH a AS (SELECT * FROM {_PAIRS}),"
            f" got AS MATERIALIZED (SELECT j.id FROM {{jobs}} j, a WHERE {_CURRENT}"
            "  ORDER BY j.id FOR UPDATE OF j SKIP LOCKED),"
            f" done AS (UPDATE {{jobs}} j SET {update} FROM got WHERE j.id = got.id RETURNING j.id)"
            " SELECT (SELECT count(*) FROM done),"
            f" CASE WHEN (SELECT count(*) FROM got) < (SELECT count(*) FROM a) THEN {_BUSY} END"
            + (", " + _NOTIFY_DONE.replace("{source}", "done") if notify_done else ""))


def _lease(queue_match: str) -> str:
    return (
        # MATERIALIZED: the LIMIT is applied once, before the update, whatever plan is chosen;
        # a subquery in WHERE can be re-run by the planner and hand out more than asked (B3).
        # SKIP LOCKED: dispatchers never wait on each other (B4).
        "WITH picked AS MATERIALIZED ("
        f" SELECT id FROM {{jobs}} WHERE state = 'ready' AND {queue_match}"
        # a paused queue leases nothing (a handful of rows: the check costs nothing)
        " AND queue NOT IN (SELECT queue FROM {paused})"
        " ORDER BY priority, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        # one lease id for the batch, drawn once (a MATERIALIZED CTE is evaluated once)
        " lease AS MATERIALIZED (SELECT nextval({lease_ids}) AS id)"
        " UPDATE {jobs} j SET state = 'leased', attempts = j.attempts + 1, lease_id = lease.id,"
        f" lease_owner = %(owner)s, lease_expires = {_EXPIRY}"
        " FROM picked, lease WHERE j.id = picked.id"
        " RETURNING j.id, j.queue, j.task, j.payload, j.attempts, j.max_attempts, j.lease_id, j.timeout"
    )


_TEXT = {
    "enqueue": (
        "WITH new AS ("
        " INSERT INTO {jobs} (id, queue, task, payload, state, priority, run_at, max_attempts, created_at,"
        "  unique_key, timeout, unique_until, flow_key, flow_limit)"
        " SELECT n.id, n.queue, n.task, n.payload,"
        # a keyed job is admitted at once when no job of its key waits blocked and its key's
        # admitted jobs plus the jobs of its key before it in the batch (n.nth) are under its
        # limit (the caller holds its key's lock, so this snapshot sees every end of the key
        # committed, and not this statement's own rows: see `_limits.key_ordinals`); else
        # blocked, until `admit`. One read of the key's live rows answers both: in the index's
        # order a blocked row comes first, and past flow_limit rows nothing changes (the
        # caller turns enable_sort off for this statement: the ORDER BY keeps the lookup on
        # the keys' own index whatever the statistics say, see migration 012)
        "  CASE WHEN n.flow_key IS NOT NULL AND NOT ("
        "   (SELECT CASE WHEN bool_or(s.state = 'blocked') THEN n.flow_limit ELSE count(*) END FROM"
        f"    (SELECT b.state FROM {{jobs}} b WHERE b.flow_key = n.flow_key AND b.state IN {LIVE}"
        "     ORDER BY b.flow_key, b.state, b.id LIMIT n.flow_limit) s) + n.nth < n.flow_limit"
        # a task with rules per key: its rules admit the job (the actorq_key_held trigger,
        # migration 015); those tasks are read once per statement
        "   AND n.task <> ALL(ARRAY(SELECT rt.name FROM {tasks} rt"
        "    WHERE rt.key_rate IS NOT NULL OR rt.key_breaker_failures IS NOT NULL))) THEN 'blocked'"
        "  WHEN to_timestamp(n.run_at) > now() THEN 'scheduled' ELSE 'ready' END,"
        "  n.priority, coalesce(to_timestamp(n.run_at), now()), n.max_attempts, now(), n.unique_key, n.timeout,"
        "  now() + make_interval(secs => n.unique_for),"  # NULL without a period
        "  n.flow_key, n.flow_limit"
        " FROM unnest(%(ids)s::text[], %(queues)s::text[], %(tasks)s::text[], %(payloads)s::bytea[],"
        "  %(priorities)s::int4[], %(run_at)s::float8[], %(max_attempts)s::int4[], %(unique_keys)s::text[],"
        "  %(timeouts)s::float8[], %(unique_for)s::float8[], %(flow_keys)s::text[], %(flow_limits)s::int4[],"
        "  %(discards)s::bool[], %(ordinals)s::int4[])"
        "  AS n(id, queue, task, payload, priority, run_at, max_attempts, unique_key, timeout, unique_for,"
        "  flow_key, flow_limit, discard, nth)"
        # A key inside another row's unique_until period is skipped here: the caller holds the
        # key's lock (`lock_keys`), so every earlier inserter of it has committed. Two jobs of
        # one batch with one key meet the live unique index instead.
        " WHERE (n.unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM {jobs} p"
        "  WHERE p.unique_key = n.unique_key AND p.unique_until > now()))"
        # on_conflict="discard": not added once its key has flow_limit admitted jobs. Such a
        # job comes alone in its statement, after its key's lock (`lock_flow`).
        f" AND (NOT n.discard OR {admitted_of_key('{jobs}', 'n.flow_key')} < n.flow_limit)"
        # A re-sent id (B6) or a unique key a live job holds (B7) is a no-op; a CHECK failure still raises.
        " ON CONFLICT DO NOTHING"
        " RETURNING queue, state)"
        " SELECT count(*), " + _NOTIFY.replace("{source}", "new WHERE state = 'ready'") + " FROM new"
    ),
    # One queue: the index on (queue, priority, id) yields rows in order and the scan stops at
    # the limit. Several: every ready row of those queues is sorted first (~1 ms per 4k rows).
    "lease": _lease("queue = %(queue)s"),
    "lease_queues": _lease("queue = ANY(%(queues)s::text[])"),
    "complete": _settle_pairs(f"state = 'succeeded', finished_at = now(), {CLEAR_LEASE}", notify_done=True),
    # jobs that returned a value: the same fenced update, with each job's value and keep time
    "complete_with_result": (
        "WITH a AS (SELECT * FROM unnest(%(ids)s::text[], %(lease_ids)s::int8[], %(data)s::bytea[],"
        "  %(keep_for)s::float8[]) AS a(id, lease_id, data, keep_for)),"
        f" got AS MATERIALIZED (SELECT j.id, a.data, a.keep_for FROM {{jobs}} j, a WHERE {_CURRENT}"
        "  ORDER BY j.id FOR UPDATE OF j SKIP LOCKED),"
        f" done AS (UPDATE {{jobs}} j SET state = 'succeeded', finished_at = now(), {CLEAR_LEASE},"
        "  result = got.data, result_expires = now() + make_interval(secs => got.keep_for)"
        "  FROM got WHERE j.id = got.id RETURNING j.id)"
        " SELECT (SELECT count(*) FROM done),"
        f" CASE WHEN (SELECT count(*) FROM got) < (SELECT count(*) FROM a) THEN {_BUSY} END, "
        + _NOTIFY_DONE.replace("{source}", "done")
    ),
    # Stores the outcomes decided by the caller: RETRY brings its retry_at, a final state its
    # finished flag; READY and the final states keep run_at (retry_at is NULL for them).
    "fail": (
        "WITH f AS (SELECT * FROM unnest(%(ids)s::text[], %(lease_ids)s::int8[], %(errors)s::text[],"
        "  %(states)s::text[], %(retry_at)s::float8[], %(finished)s::bool[], %(tracebacks)s::text[])"
        "  AS f(id, lease_id, error, state, retry_at, finished, traceback)),"
        " done AS (UPDATE {jobs} j SET state = f.state, run_at = coalesce(to_timestamp(f.retry_at), j.run_at),"
        "  finished_at = CASE WHEN f.finished THEN now() END,"
        f"  last_error = f.error, last_traceback = f.traceback, {CLEAR_LEASE}"
        "  FROM f WHERE j.id = f.id AND j.lease_id = f.lease_id AND j.state = 'leased'"
        "  RETURNING j.id, j.attempts, f.error, f.finished),"
        " noted AS (INSERT INTO {errors} (job_id, attempt, at, error) SELECT id, attempts, now(), error FROM done"
        "  RETURNING 1)"
        # a retry is no outcome: only the jobs that ended are announced
        " SELECT (SELECT count(*) FROM noted), " + _NOTIFY_DONE.replace("{source}", "done WHERE finished")
    ),
    "release": _settle_pairs(f"state = 'ready', attempts = j.attempts - 1, {CLEAR_LEASE}"),
    # the current pairs, locked for the caller's fail(), then the busy ones with NULL fields
    "attempts": (
        f"WITH a AS (SELECT * FROM {_PAIRS}),"
        f" got AS MATERIALIZED ({_attempts('j.id = a.id AND j.lease_id = a.lease_id', source=', a')})"
        " SELECT id, lease_id, task, attempts, max_attempts FROM got"
        " UNION ALL SELECT busy, NULL, NULL, NULL, NULL"
        f" FROM unnest(CASE WHEN (SELECT count(*) FROM got) < (SELECT count(*) FROM a) THEN {_BUSY} END) AS busy"
    ),
    # A reclaim skips rows another transaction holds: they are being settled there, or, if that
    # transaction rolls back, their lease expires and the rescue takes them.
    "leased_by": _attempts("j.lease_owner = %(owner)s AND j.lease_id <> ALL(%(keep)s::int8[])"),
    # starts_with, not LIKE: '%' and '_' in a node name are plain characters here.
    "leased_with_prefix": _attempts("starts_with(j.lease_owner, %(prefix)s)"),
    "expired": _attempts("j.lease_expires < now()"),
    "declare_tasks": (
        "INSERT INTO {tasks} (name, queue, priority, max_attempts, unique_for, declared_at, concurrency, rate,"
        " per_second, burst, tokens, tokens_at, breaker_failures, breaker_window, breaker_cool_down, breaker_probes,"
        " concurrency_limit, on_conflict)"
        " SELECT d.name, d.queue, d.priority, d.max_attempts, d.unique_for, now(), d.concurrency, d.rate,"
        "  d.per_second, d.burst, d.burst, CASE WHEN d.rate IS NULL THEN NULL ELSE extract(epoch FROM now()) END,"
        "  d.bf, d.bw, d.bc, d.bp, d.concurrency_limit, d.on_conflict"
        " FROM unnest(%(names)s::text[], %(queues)s::text[], %(priorities)s::int4[], %(max_attempts)s::int4[],"
        "  %(unique_for)s::float8[], %(concurrency)s::int4[], %(rate)s::text[], %(per_second)s::float8[],"
        "  %(burst)s::int4[], %(breaker_failures)s::int4[], %(breaker_window)s::float8[],"
        "  %(breaker_cool_down)s::float8[], %(breaker_probes)s::int4[], %(concurrency_limits)s::int4[],"
        "  %(on_conflicts)s::text[])"
        "  AS d(name, queue, priority, max_attempts, unique_for, concurrency, rate, per_second, burst, bf, bw, bc, bp,"
        "  concurrency_limit, on_conflict)"
        # the last writer wins: a node starting later replaces what an earlier one declared; a
        # task's bucket keeps its tokens (at most the new burst): no second burst at a start
        " ON CONFLICT (name) DO UPDATE SET queue = EXCLUDED.queue, priority = EXCLUDED.priority,"
        " max_attempts = EXCLUDED.max_attempts, unique_for = EXCLUDED.unique_for, declared_at = EXCLUDED.declared_at,"
        " concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate, per_second = EXCLUDED.per_second,"
        " burst = EXCLUDED.burst, breaker_failures = EXCLUDED.breaker_failures,"
        " breaker_window = EXCLUDED.breaker_window, breaker_cool_down = EXCLUDED.breaker_cool_down,"
        " breaker_probes = EXCLUDED.breaker_probes, concurrency_limit = EXCLUDED.concurrency_limit,"
        " on_conflict = EXCLUDED.on_conflict,"
        " tokens = CASE WHEN {tasks}.tokens IS NULL OR EXCLUDED.tokens IS NULL THEN EXCLUDED.tokens"
        "  ELSE least({tasks}.tokens, EXCLUDED.burst) END,"
        " tokens_at = CASE WHEN {tasks}.tokens IS NULL OR EXCLUDED.tokens IS NULL THEN EXCLUDED.tokens_at"
        "  ELSE {tasks}.tokens_at END"
    ),
    "declared_tasks": (
        "SELECT name, queue, priority, max_attempts, unique_for, concurrency_limit, on_conflict FROM {tasks}"
        " WHERE name = ANY(%(names)s::text[])"
    ),
    # a stored schedule keeps its added_at and last_fired: a new definition does not fire again
    # what already fired
    "put_schedules": (
        "INSERT INTO {schedules} (name, cron, task, payload, queue, timezone, catch_up, source, added_at, last_fired)"
        " SELECT * FROM unnest(%(names)s::text[], %(crons)s::text[], %(tasks)s::text[], %(payloads)s::bytea[],"
        "  %(queues)s::text[], %(timezones)s::text[], %(catch_ups)s::text[], %(sources)s::text[],"
        "  %(added_at)s::float8[], %(last_fired)s::float8[])"
        " ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, task = EXCLUDED.task, payload = EXCLUDED.payload,"
        " queue = EXCLUDED.queue, timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up,"
        " source = EXCLUDED.source"
    ),
    "remove_schedule": "DELETE FROM {schedules} WHERE name = ANY(%(names)s::text[])",
    "schedules": (
        "SELECT name, cron, task, payload, queue, timezone, catch_up, source, added_at, last_fired"
        " FROM {schedules} ORDER BY name"
    ),
    # Compare-and-set. A second scheduler firing the same time waits for the first's row lock
    # (within lock_timeout), then finds last_fired moved and updates nothing.
    "fire_schedule": (
        "UPDATE {schedules} SET last_fired = %(fired)s::float8"
        " WHERE name = %(name)s AND last_fired IS NOT DISTINCT FROM %(previous)s::float8"
    ),
    # A row another transaction holds (it is being rescued) keeps its expiry: the next renewal,
    # a third of the lease later, extends it if it is still ours.
    "renew": (
        "WITH got AS MATERIALIZED (SELECT id FROM {jobs}"
        "  WHERE state = 'leased' AND lease_owner = ANY(%(owners)s::text[]) ORDER BY id FOR UPDATE SKIP LOCKED)"
        f" UPDATE {{jobs}} j SET lease_expires = {_EXPIRY} FROM got WHERE j.id = got.id"
    ),
    # A due row another transaction holds is promoted by a later tick.
    "promote": (
        "WITH got AS MATERIALIZED (SELECT id FROM {jobs}"
        f"  WHERE state IN {DUE} AND run_at <= now() ORDER BY id FOR UPDATE SKIP LOCKED),"
        " moved AS (UPDATE {jobs} j SET state = 'ready' FROM got WHERE j.id = got.id RETURNING j.queue)"
        " SELECT count(*), " + _NOTIFY.replace("{source}", "moved") + " FROM moved"
    ),
    "has_due": f"SELECT EXISTS (SELECT 1 FROM {{jobs}} WHERE state IN {DUE} AND run_at <= now())",
    "has_ready": ("SELECT EXISTS (SELECT 1 FROM {jobs} WHERE state = 'ready' AND queue = ANY(%(queues)s::text[])"
                  " AND queue NOT IN (SELECT queue FROM {paused}))"),
    # a second pause keeps the first one's time
    "pause_queue": "INSERT INTO {paused} (queue) VALUES (%(queue)s) ON CONFLICT (queue) DO NOTHING",
    "resume_queue": "DELETE FROM {paused} WHERE queue = %(queue)s",
    "paused_queues": "SELECT queue FROM {paused} ORDER BY queue",
    "cancelled": "SELECT id FROM {jobs} WHERE state = 'cancelled' AND id = ANY(%(ids)s::text[])",
    # announced twice: to the nodes (the one running it stops it at once) and to result waiters
    "cancel": (
        f"WITH c AS (UPDATE {{jobs}} SET state = 'cancelled', finished_at = now(), {CLEAR_LEASE}"
        f" WHERE id = %(id)s AND state IN {LIVE} RETURNING id)"
        " SELECT (SELECT count(*) FROM c), (SELECT count(pg_notify(%(cancel_channel)s, id)) FROM c), "
        + _NOTIFY_DONE.replace("{source}", "c")
    ),
    "retry_dead": (
        # a keyed job comes back blocked: its trigger (migration 012) admits it if there is room
        "WITH revived AS (UPDATE {jobs} SET state = CASE WHEN flow_key IS NULL THEN 'ready' ELSE 'blocked' END,"
        " attempts = 0, run_at = now(), finished_at = NULL"
        f" WHERE id = %(id)s AND state IN {REVIVABLE} RETURNING queue)"
        " SELECT count(*), " + _NOTIFY.replace("{source}", "revived") + " FROM revived"
    ),
    # migration 016: totals and the deltas not folded yet, in one snapshot
    "counts": (
        "SELECT queue, state, sum(n) FROM (SELECT queue, state, n FROM {counts}"
        " UNION ALL SELECT queue, state, n FROM {deltas}) c GROUP BY queue, state HAVING sum(n) <> 0"
    ),
    "counts_scan": "SELECT queue, state, count(*) FROM {jobs} GROUP BY queue, state",
    # by the server's clock, as the triggers' slots: the folded slots and the deltas from the
    # window's first slot on, and the seconds from its start to now
    "queue_stats": (
        f"WITH t AS (SELECT floor((extract(epoch FROM now()) - %(window)s) / {STATS_SLOT})::bigint AS first)"
        " SELECT queue, sum(finished), sum(failed), sum(leased), sum(wait_sum), max(wait_max),"
        f" extract(epoch FROM now())::float8 - min(t.first) * {STATS_SLOT} FROM ("
        " SELECT queue, slot, finished, failed, leased, wait_sum, wait_max FROM {slots}"
        " UNION ALL SELECT queue, slot, CASE WHEN state = 'leased' THEN 0 ELSE n END,"
        "  CASE WHEN state IN ('failed', 'dead') THEN n ELSE 0 END, CASE WHEN state = 'leased' THEN n ELSE 0 END,"
        "  coalesce(wait_sum, 0), coalesce(wait_max, 0) FROM {deltas} WHERE slot > 0) f, t"
        " WHERE f.slot >= t.first GROUP BY queue"
    ),
    # migration 016: fold the deltas and the past slots, drop the old slots (one node at a time)
    "fold_figures": "SELECT {fold}()",
    "get": (
        "SELECT id, queue, task, state, attempts, max_attempts, extract(epoch FROM run_at)::float8,"
        " lease_owner, last_error FROM {jobs} WHERE id = %(id)s"
    ),
    "errors": "SELECT error FROM {errors} WHERE job_id = %(id)s ORDER BY seq",
    # an expired result reads as expired before the sweep removes it
    "result": (
        "SELECT id, state, CASE WHEN result_expires <= now() THEN NULL ELSE result END,"
        " coalesce(result_expires <= now(), false), last_error, last_traceback FROM {jobs} WHERE id = %(id)s"
    ),
    # SKIP LOCKED: the sweep never waits on a node settling or reading those rows
    "expire_results": (
        "UPDATE {jobs} SET result = NULL WHERE id IN (SELECT id FROM {jobs}"
        " WHERE result IS NOT NULL AND result_expires <= now() LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    ),
    # One state's finished jobs past their age by the database's clock, oldest first: a range scan
    # of actorq_jobs_finished (state, finished_at). Their error rows go in the same statement.
    # SKIP LOCKED: the prune never waits on a node reading or retrying one of those rows.
    # A finished job whose unique period is still ahead holds its key (unique_for): kept until it ends.
    "prune": (
        "WITH doomed AS MATERIALIZED (SELECT id FROM {jobs} WHERE state = %(state)s"
        "  AND finished_at < now() - make_interval(secs => %(age)s::float8)"
        "  AND (unique_until IS NULL OR unique_until <= now())"
        "  ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " gone AS (DELETE FROM {jobs} j USING doomed WHERE j.id = doomed.id"
        "  RETURNING j.id, j.last_error IS NOT NULL AS had_errors),"
        # every accepted fail sets last_error: only those jobs cost a lookup in the errors table
        " errors_gone AS (DELETE FROM {errors} e USING gone WHERE gone.had_errors AND e.job_id = gone.id)"
        " SELECT count(*) FROM gone"
    ),
    # Take `name` if it is free or expired, or renew it if `holder` has it; a row back means "you lead".
    # -- the operator's reads and clears (actorq jobs / queues). A state is written in as a
    # literal (`for_state`): the partial index actorq_jobs_state_queue (state, queue, id) holds the
    # `INDEXED_STATES` only, and a generic plan could not prove a bound state is one of them.
    # One index probe per distinct queue of such a state:
    "queues_in_state": (
        f"WITH RECURSIVE q(name) AS (SELECT min(queue) FROM {{jobs}} WHERE state = {STATE_MARK}"
        f" UNION ALL SELECT (SELECT min(queue) FROM {{jobs}} WHERE state = {STATE_MARK} AND queue > q.name)"
        " FROM q WHERE q.name IS NOT NULL) SELECT name FROM q WHERE name IS NOT NULL"
    ),
    "list_page": (
        f"SELECT {_SUMMARY} FROM {{jobs}} WHERE state = {STATE_MARK} AND queue = %(queue)s AND id > %(after)s"
        " AND (%(task)s::text IS NULL OR task = %(task)s) ORDER BY id LIMIT %(limit)s"
    ),
    # ready and succeeded, the many: the primary key from the cursor (see docs/operations.md)
    "list_many": (
        f"SELECT {_SUMMARY} FROM {{jobs}} WHERE state = {STATE_MARK}"
        " AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND id > %(after)s"
        " AND (%(task)s::text IS NULL OR task = %(task)s) ORDER BY id LIMIT %(limit)s"
    ),
    # leased: the leased jobs' own indexes (at most the workers' credits), sorted
    "list_leased": (
        f"SELECT {_SUMMARY} FROM {{jobs}} WHERE state = 'leased'"
        " AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND id > %(after)s"
        " AND (%(task)s::text IS NULL OR task = %(task)s) ORDER BY id LIMIT %(limit)s"
    ),
    "list_all": (
        f"SELECT {_SUMMARY} FROM {{jobs}} WHERE id > %(after)s"
        " AND (%(task)s::text IS NULL OR task = %(task)s) ORDER BY id LIMIT %(limit)s"
    ),
    "inspect": (
        "SELECT id, queue, task, state, payload, priority, attempts, max_attempts,"
        f" {_epoch('run_at')}, {_epoch('created_at')}, {_epoch('finished_at')}, lease_id, lease_owner,"
        f" {_epoch('lease_expires')}, timeout, unique_key, {_epoch('unique_until')}, last_error, last_traceback,"
        f" result, {_epoch('result_expires')} FROM {{jobs}} WHERE id = %(id)s"
    ),
    "inspect_errors": f"SELECT attempt, {_epoch('at')}, error FROM {{errors}} WHERE job_id = %(id)s ORDER BY seq",
    # each queue's oldest ready job: ids grow with time, so its smallest id, from the ready index
    "oldest_ready": (
        "WITH RECURSIVE q(name) AS (SELECT min(queue) FROM {jobs} WHERE state = 'ready'"
        " UNION ALL SELECT (SELECT min(queue) FROM {jobs} WHERE state = 'ready' AND queue > q.name)"
        " FROM q WHERE q.name IS NOT NULL)"
        f" SELECT name, (SELECT {_epoch('created_at')} FROM {{jobs}} WHERE id = (SELECT min(id) FROM {{jobs}}"
        "  WHERE state = 'ready' AND queue = q.name))"
        " FROM q WHERE name IS NOT NULL"
    ),
    # SKIP LOCKED: a clear never waits on a node leasing or settling those rows
    "clear_queue": (
        f"WITH doomed AS MATERIALIZED (SELECT id FROM {{jobs}} WHERE state = {STATE_MARK} AND queue = %(queue)s"
        "  LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        f" gone AS (DELETE FROM {{jobs}} j USING doomed WHERE j.id = doomed.id AND j.state = {STATE_MARK}"
        "  RETURNING j.id, j.last_error IS NOT NULL AS had_errors),"
        " errors_gone AS (DELETE FROM {errors} e USING gone WHERE gone.had_errors AND e.job_id = gone.id)"
        " SELECT count(*) FROM gone"
    ),
    "lead": (
        "INSERT INTO {leaders} AS l (name, holder, expires_at)"
        " VALUES (%(name)s, %(holder)s, now() + make_interval(secs => %(ttl)s::float8))"
        " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
        " WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()"
        " RETURNING l.holder"
    ),
    "resign": "DELETE FROM {leaders} WHERE name = %(name)s AND holder = %(holder)s",
    # rows inside their period, then the live holder, which wins when both are there
    # One transaction lock per unique key (one of LOCK_BUCKETS, by a hash of it: two keys may
    # share one, which only serialises them; a batch of any number of keys takes at most
    # LOCK_BUCKETS locks, where a lock per key ran PostgreSQL's lock table out of memory at
    # 30,000 keys), taken in one order (of the buckets) so two inserters never wait in a
    # cycle, and held to the commit. The next inserter of the key waits here, and its insert,
    # a statement of its own, then sees this one committed: a holder that was inserted and
    # finished meanwhile still keeps its key while inside its unique_for period. Without the
    # lock, the live unique index alone would let it in once the holder left the live states.
    "lock_keys": (
        "SELECT pg_advisory_xact_lock({unique_lock}, d.h) FROM"
        f" (SELECT DISTINCT {LOCK_BUCKET.format(key='k')} AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY h) d"
    ),
    # The flow keys of an enqueue, EXCLUSIVE, in bucket order, after its unique keys' (migration
    # 012 says who takes them how, 014 makes them buckets); then `admit` fills each key's free slots.
    # The statement also turns sorts off for the insert that follows (see `enqueue`) and returns
    # the setting it had, which `sort_restore` (or the insert's own `restore`) puts back: one
    # round trip each way instead of a SET before and after.
    "lock_flow": (
        "WITH was AS MATERIALIZED (SELECT current_setting('enable_sort') AS sort),"
        " locked AS MATERIALIZED (SELECT count(pg_advisory_xact_lock({flow_lock}, d.h)) FROM"
        f" (SELECT DISTINCT {LOCK_BUCKET.format(key='k')} AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY h) d)"
        " SELECT was.sort, set_config('enable_sort', 'off', true) FROM was, locked"
    ),
    "admit": "SELECT sum({admit}(k)) FROM unnest(%(keys)s::text[]) AS k",
    # after the insert of keyed jobs: enable_sort as `lock_flow` found it
    "sort_restore": "SELECT set_config('enable_sort', %(sort)s, true)",
    "holders": (
        "SELECT unique_key, id, 0 AS live FROM {jobs} WHERE unique_key = ANY(%(keys)s::text[])"
        " AND unique_until > now()"
        " UNION ALL SELECT unique_key, id, 1 FROM {jobs} WHERE unique_key = ANY(%(keys)s::text[])"
        f" AND state IN {LIVE} ORDER BY live"
    ),
    "privileges": (
        "SELECT has_table_privilege(%(jobs)s, 'SELECT') AND has_table_privilege(%(jobs)s, 'INSERT')"
        " AND has_table_privilege(%(jobs)s, 'UPDATE') AND has_table_privilege(%(errors)s, 'INSERT')"
        " AND has_table_privilege(%(errors)s, 'SELECT') AND has_sequence_privilege(%(lease_ids)s, 'USAGE')"
        # nodes declare their tasks at start
        " AND has_table_privilege(%(tasks)s, 'SELECT') AND has_table_privilege(%(tasks)s, 'INSERT')"
        " AND has_table_privilege(%(tasks)s, 'UPDATE')"
        # nodes write their file's schedules at start, and fire them
        " AND has_table_privilege(%(schedules)s, 'SELECT') AND has_table_privilege(%(schedules)s, 'INSERT')"
        " AND has_table_privilege(%(schedules)s, 'UPDATE') AND has_table_privilege(%(schedules)s, 'DELETE')"
    ),
}
# the insert of a batch of keyed jobs, which also puts enable_sort back (`lock_flow` turned it off)
_head, _from, _tail = _TEXT["enqueue"].rpartition(" FROM new")
_TEXT["enqueue_restore"] = _head + ", set_config('enable_sort', %(sort)s, true)" + _from + _tail


def table(schema: str, name: str) -> str:
    """The quoted, schema-qualified name of one of the journal's tables."""
    return sql.Identifier(schema, name).as_string(None)


@lru_cache(maxsize=64)
def statements(schema: str) -> Statements:
    """Compose (once) every statement for `schema`.

    Raises:
        ValueError: `schema` is not a valid schema name.
    """
    check_schema(schema)
    names = {
        "jobs": sql.Identifier(schema, "actorq_jobs"),
        "errors": sql.Identifier(schema, "actorq_errors"),
        "leaders": sql.Identifier(schema, "actorq_leaders"),
        "tasks": sql.Identifier(schema, "actorq_tasks"),
        "schedules": sql.Identifier(schema, "actorq_schedules"),
        "paused": sql.Identifier(schema, "actorq_paused_queues"),
        # nextval takes the sequence's name as text: a quoted, escaped literal.
        "lease_ids": sql.Literal(table(schema, "actorq_lease_ids")),
        # the lock space of this schema's unique keys (the migrations lock is hashtext('actorq.migrate'))
        "unique_lock": sql.SQL("hashtext({})").format(sql.Literal(f"actorq.unique:{schema}")),
        # and of its flow keys (the triggers of migration 012 compute the same)
        "flow_lock": sql.SQL("hashtext({})").format(sql.Literal(f"actorq.flow:{schema}")),
        "admit": sql.Identifier(schema, "actorq_admit"),
        "counts": sql.Identifier(schema, "actorq_counts"),
        "deltas": sql.Identifier(schema, "actorq_figure_deltas"),
        "slots": sql.Identifier(schema, "actorq_queue_slots"),
        "fold": sql.Identifier(schema, "actorq_fold_figures"),
    }
    rendered = {key: sql.SQL(text).format(**names).as_string(None) for key, text in _TEXT.items()}
    return Statements(schema=schema, channel=schema, done_channel=side_channel(schema, "done"),
                      cancel_channel=side_channel(schema, "cancel"),
                      migrations_table=table(schema, "actorq_migrations"), **rendered)
