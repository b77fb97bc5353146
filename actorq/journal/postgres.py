"""The PostgreSQL journal: many nodes on one database, one schema per journal.

Needs the optional ``postgres`` extra (psycopg 3): ``pip install 'actorq[postgres]'``.

::

    node A ─ journal writer ─┐                        ┌─ LISTEN "<schema>" ─ Listener ─▶ wake dispatcher
    node B ─ journal writer ─┼─▶ <schema>.actorq_jobs ┤
    web app ─ enqueue_in(conn) (inside its own transaction; the job exists iff it commits)
                             ├─ enqueue / promote / retry_dead: NOTIFY "<schema>", payload = queue
                             ├─ complete / fail (to a final state) / cancel: NOTIFY "<schema>.done",
                             │    payload = JSON array of the ids that ended (200 a notification)
                             └─ cancel: NOTIFY "<schema>.cancel", payload = the job id
                                  (nodes' listeners stop it; `Client.result` LISTENs on .done)

Claims take ready rows with ``FOR UPDATE SKIP LOCKED`` under a materialized
``LIMIT``, so concurrent dispatchers never wait on each other and never get
more than they asked for; a ``CHECK`` keeps ``attempts <= max_attempts``.
Lease expiry and ``run_at`` are compared with the database's ``now()`` (the
start of the transaction), never with a node's wall clock. Lease ids come
from one sequence, so a stale lease id never matches a newer lease (fencing).

Schema and migrations: numbered files ``sql/postgres_NNN_*.sql``, applied by
`migrate` under an advisory lock and recorded in ``<schema>.actorq_migrations``.
Opening a journal checks the version: a schema that does not exist yet or is
empty is migrated on the spot (the first run works as with SQLite; pass
``create_schema=False`` to forbid it); an older version is refused ("run
``actorq migrate``"), a newer one too ("upgrade actorq").

Transactions: methods called inside ``with journal.transaction():`` share one
``BEGIN`` ... ``COMMIT``; every method is one statement. Called alone, a method's
statement runs by itself in autocommit: one round trip. An `enqueue` that the
schema refuses (a CHECK violation) runs under a savepoint and fails alone, as a
failed statement does in SQLite, and the rest of the group still commits. Any
other failed statement (a deadlock, a server error) aborts the transaction: the
later methods and the ``COMMIT`` raise `JournalError`, and nothing is applied.
If the connection is lost, the transaction fails the same way (when the loss
hit the ``COMMIT`` itself, its outcome is unknown) and the next operation
reconnects, retrying with backoff.

Durability: a transition is durable once ``transaction()`` (or the method,
called alone) returns, under the server's ``synchronous_commit`` (on by default).
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, ClassVar, Collection, Iterator, Mapping, Sequence

try:
    import psycopg
    from psycopg import sql
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without psycopg
    raise ImportError(
        "the PostgreSQL journal needs psycopg 3: pip install 'actorq[postgres]'") from exc
# 3.2: quoting identifiers without a connection, and notifies(timeout=...) for the listener
if tuple(int(part) for part in re.findall(r"\d+", psycopg.__version__)[:2]) < (3, 2):  # pragma: no cover
    raise ImportError(f"the PostgreSQL journal needs psycopg >= 3.2 (found {psycopg.__version__}): "
                      "pip install -U 'actorq[postgres]'")

from actorq.errors import JournalError, QueueFull
from actorq.journal import _limits
from actorq.journal._pgconnect import Connector
from actorq.journal._pgsql import LOCK_BUCKET, Statements, side_channel, statements, table
from actorq.journal._sqltext import for_state, listing_reads
from psycopg import sql as _sql
from actorq.journal.config import (
    DEFAULT_CONNECT_RETRY_FOR, DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT, DEFAULT_LOCK_TIMEOUT, DEFAULT_SCHEMA, MAX_SECONDS,
    JournalConfig, check_schema, redact_url,
)
from actorq.journal.protocol import (
    TERMINAL_STATES, Attempt, BreakerState, CircuitBreaker, ErrorRecord, Failure, JobDetail, JobInfo, JobResult, JobState, JobSummary,
    KEY_ROWS_PRUNED_PER_TICK, KEYS_PER_TICK, KeptResult, LeasedJob, NewJob, QueueLimits, QueueStats, ScheduleRow,
    TaskDefaults, check_clear, check_failures, check_listing, check_prune, merge_pages, stats_slots,
)

@lru_cache(maxsize=None)
def _limit_statements(schema: str) -> dict[str, str]:
    """The queue-limit statements of `schema` (migration 010); only a listed queue runs them."""
    queues = _sql.Identifier(schema, "actorq_queues").as_string(None)
    jobs = _sql.Identifier(schema, "actorq_jobs").as_string(None)
    space = _sql.Literal(f"actorq.queue:{schema}").as_string(None)
    # The lease of one limited queue: today's statement, its LIMIT bounded by what the queue's
    # leases leave. The count runs in this statement, after the claim lock was taken in an
    # earlier one, so its snapshot holds every lease committed before us (READ COMMITTED).
    lease = statements(schema).lease
    bounded = lease.replace("LIMIT %(limit)s", (
        "LIMIT (SELECT greatest(0, least(%(limit)s, coalesce(%(concurrency)s - count(*), %(limit)s),"
        "  coalesce(%(node_concurrency)s - count(*) FILTER (WHERE left(lease_owner, length(%(prefix)s)) = %(prefix)s),"
        "   %(limit)s)))"
        f"  FROM {jobs} WHERE state = 'leased' AND queue = %(queue)s)"), 1)
    if bounded == lease:
        raise RuntimeError("the lease statement has no 'LIMIT %(limit)s' to bound")
    epoch = "extract(epoch FROM now())::float8"
    return {
        # A new bucket starts full; a declared one keeps its tokens (at most the new burst), so a
        # node starting does not hand out a second burst. No rate: no bucket.
        "declare": (
            f"INSERT INTO {queues} (queue, concurrency, max_depth, rate, per_second, burst, tokens, tokens_at)"
            " SELECT q, c, m, r, p, b, b, CASE WHEN r IS NULL THEN NULL ELSE " + epoch + " END"
            " FROM unnest(%(queues)s::text[], %(concurrency)s::int4[], %(max_depth)s::int4[], %(rate)s::text[],"
            "  %(per_second)s::float8[], %(burst)s::int4[]) AS d(q, c, m, r, p, b)"
            " ON CONFLICT (queue) DO UPDATE SET concurrency = excluded.concurrency,"
            " max_depth = excluded.max_depth, declared_at = now(), rate = excluded.rate,"
            " per_second = excluded.per_second, burst = excluded.burst,"
            f" tokens = CASE WHEN {queues}.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens"
            f"  ELSE least({queues}.tokens, excluded.burst) END,"
            f" tokens_at = CASE WHEN {queues}.tokens IS NULL OR excluded.tokens IS NULL THEN excluded.tokens_at"
            f"  ELSE {queues}.tokens_at END"
        ),
        "read": f"SELECT queue, concurrency, NULL::int4, max_depth, rate, burst FROM {queues}",
        # A rated queue's bucket, read under its claim lock (this statement's snapshot holds the
        # previous claimer's spend), with the database's now() as Unix seconds.
        # Take up to %(want)s whole tokens of a rated queue's bucket, refilled to now, in one
        # round trip: what a lease will lease at most. Run after the claim lock was granted;
        # FOR UPDATE also returns the newest version of the row. Returns the tokens before the
        # take, the take, the rate and now.
        "reserve": (
            f"WITH b AS MATERIALIZED (SELECT least(burst, tokens + greatest(0, {epoch} - tokens_at) * per_second)"
            f"  AS refill, per_second FROM {queues} WHERE queue = %(queue)s AND per_second IS NOT NULL FOR UPDATE),"
            " t AS MATERIALIZED (SELECT refill, per_second,"
            f"  greatest(0, least(%(want)s, floor(refill + {_limits.TOKEN_EPSILON!r})))::int AS taken FROM b)"
            f" UPDATE {queues} q SET tokens = t.refill - t.taken, tokens_at = {epoch} FROM t"
            f" WHERE q.queue = %(queue)s RETURNING t.refill, t.taken, t.per_second"
        ),
        # tokens taken and not used (the queue had fewer ready jobs, or its concurrency bound)
        "refund": f"UPDATE {queues} SET tokens = least(burst, tokens + %(back)s) WHERE queue = %(queue)s",
        # The claimers of one queue, every node's, one at a time until commit (the lock is taken
        # before the count's statement starts); enqueuers with a max_depth take another key.
        "claim": (
            f"SELECT true, (SELECT concurrency FROM {queues} WHERE queue = %(queue)s)"
            f" FROM pg_advisory_xact_lock(hashtext({space}), hashtext('claim:' || %(queue)s))"
        ),
        # A transaction that already holds another queue's claim lock (several leases in one
        # group commit), or a fill lock, never waits for a claim lock: two nodes taking two
        # queues' locks in opposite orders would deadlock. Not granted: that queue leases
        # nothing this time (the next wake or poll tries again).
        "try_claim": (
            f"SELECT pg_try_advisory_xact_lock(hashtext({space}), hashtext('claim:' || %(queue)s)),"
            f" (SELECT concurrency FROM {queues} WHERE queue = %(queue)s)"
        ),
        "lease": bounded,
        "fill": (
            f"SELECT pg_advisory_xact_lock(hashtext({space}), hashtext('fill:' || q.queue)), q.queue, q.max_depth"
            f" FROM (SELECT queue, max_depth FROM {queues} WHERE queue = ANY(%(queues)s::text[])"
            "  AND max_depth IS NOT NULL ORDER BY queue) q"
        ),
        "present": f"SELECT id FROM {jobs} WHERE id = ANY(%(ids)s::text[])",  # re-sent ids take no room
        "depth": (
            f"SELECT q, (SELECT count(*) FROM {jobs} WHERE state = 'ready' AND queue = q)"
            f" + (SELECT count(*) FROM {jobs} WHERE state IN ('blocked', 'scheduled', 'retry') AND queue = q)"
            " FROM unnest(%(queues)s::text[]) AS q"
        ),
    }


@lru_cache(maxsize=None)
def _rule_statements(schema: str) -> dict[str, str]:
    """The statements of a task's rules (migration 013); only a journal with a task declared
    with rules runs them."""
    tasks = _sql.Identifier(schema, "actorq_tasks").as_string(None)
    jobs = _sql.Identifier(schema, "actorq_jobs").as_string(None)
    space = _sql.Literal(f"actorq.queue:{schema}").as_string(None)
    queues_match = "queue = ANY(%(queues)s::text[])"
    plain, single, queue_match = statements(schema).lease_queues, statements(schema).lease, "queue = %(queue)s"
    if queues_match not in plain or queue_match not in single:
        raise RuntimeError("the lease statements have no queue match to narrow")
    breakers = _sql.Identifier(schema, "actorq_breakers").as_string(None)
    fail = statements(schema).fail
    fail_tasks = fail.replace("RETURNING j.id, j.attempts, f.error, f.finished)",
                              "RETURNING j.id, j.attempts, f.error, f.finished, j.task)", 1).replace(
        "SELECT (SELECT count(*) FROM noted), ", "SELECT (SELECT count(*) FROM noted), ARRAY(SELECT task FROM done), ", 1)
    if fail_tasks.count("j.task)") != 1 or "ARRAY(SELECT task FROM done)" not in fail_tasks:
        raise RuntimeError("the fail statement does not have the shape its breaker variant expects")
    return {
        "read": (f"SELECT name, queue, priority, max_attempts, unique_for, concurrency, rate, burst, breaker_failures,"
                 f" breaker_window, breaker_cool_down, breaker_probes FROM {tasks}"
                 " WHERE concurrency IS NOT NULL OR rate IS NOT NULL OR breaker_failures IS NOT NULL"),
        # the claimers of one task, every node's, one at a time until commit (as a queue's claim)
        "claim": (f"SELECT true FROM pg_advisory_xact_lock(hashtext({space}), hashtext('task:' || %(task)s))"),
        "try_claim": f"SELECT pg_try_advisory_xact_lock(hashtext({space}), hashtext('task:' || %(task)s))",
        # read after the lock: this statement's snapshot holds the previous claimer's leases and spend
        "rules": (
            f"SELECT concurrency, tokens, tokens_at, per_second, burst, extract(epoch FROM now())::float8,"
            # its leased jobs, counted for a concurrency or a breaker that is not closed only
            f" CASE WHEN concurrency IS NULL AND coalesce(b.state, 'closed') = 'closed' THEN 0"
            f" ELSE (SELECT count(*) FROM {jobs}"
            "  WHERE state = 'leased' AND task = %(task)s) END,"
            " breaker_failures, breaker_window, breaker_cool_down, breaker_probes,"
            f" b.state, b.failed_at, b.opened_at"
            f" FROM {tasks} LEFT JOIN {breakers} b ON b.task = name WHERE name = %(task)s"
        ),
        # circuit breakers: a task declared with one has a row, closed at first
        "breaker_declare": (
            f"INSERT INTO {breakers} (task, state, changed_at) SELECT t, 'closed', extract(epoch FROM now())"
            " FROM unnest(%(tasks)s::text[]) AS t ON CONFLICT (task) DO NOTHING"
        ),
        "breaker_drop": f"DELETE FROM {breakers} WHERE task = ANY(%(tasks)s::text[])",
        # a failed attempt's breaker, locked until the commit: every node's failures count once
        "breaker_lock": (f"SELECT state, failed_at, opened_at, extract(epoch FROM now())::float8 FROM {breakers}"
                         " WHERE task = %(task)s FOR UPDATE"),
        "breaker_put": (f"UPDATE {breakers} SET state = %(state)s, failed_at = %(failed_at)s,"
                        " opened_at = %(opened_at)s, changed_at = extract(epoch FROM now()) WHERE task = %(task)s"),
        # open -> half_open once the cool-down is over (compare and set: a failure may have moved it)
        "breaker_half_open": (f"UPDATE {breakers} SET state = 'half_open', changed_at = extract(epoch FROM now())"
                              " WHERE task = %(task)s AND state = 'open'"),
        # a probe's success closes a half-open breaker: the tasks of the jobs this complete ended
        "breaker_close": (
            f"UPDATE {breakers} SET state = 'closed', failed_at = '[]', changed_at = extract(epoch FROM now())"
            f" WHERE state = 'half_open' AND task IN (SELECT task FROM {jobs} WHERE state = 'succeeded'"
            "  AND id = ANY(%(ids)s::text[]))"
        ),
        "breakers": (
            f"SELECT b.task, b.state, b.failed_at, b.opened_at, t.breaker_cool_down FROM {breakers} b"
            f" JOIN {tasks} t ON t.name = b.task WHERE t.breaker_failures IS NOT NULL ORDER BY b.task"
        ),
        "fail_tasks": fail_tasks,
        # a queue's room, counted apart when its ruled tasks lease first (see `_lease_ruled`)
        "queue_leased": (
            f"SELECT count(*), count(*) FILTER (WHERE left(lease_owner, length(%(prefix)s)) = %(prefix)s)"
            f" FROM {jobs} WHERE state = 'leased' AND queue = %(queue)s"
        ),
        "spend": f"UPDATE {tasks} SET tokens = %(tokens)s, tokens_at = %(at)s WHERE name = %(task)s",
        "lease_task": plain.replace(queues_match, queues_match + " AND task = %(task)s", 1),
        "lease_others": plain.replace(queues_match, queues_match + " AND task <> ALL(%(ruled)s::text[])", 1),
        # one queue: the ready index's order, as the plain lease of one queue
        "lease_task_one": single.replace(queue_match, queue_match + " AND task = %(task)s", 1),
        "lease_others_one": single.replace(queue_match, queue_match + " AND task <> ALL(%(ruled)s::text[])", 1),
    }


@lru_cache(maxsize=None)
def _key_statements(schema: str) -> dict[str, str]:
    """The statements of rules per flow key (migration 015); only a journal with a task declared
    with such rules runs them."""
    tasks = _sql.Identifier(schema, "actorq_tasks").as_string(None)
    jobs = _sql.Identifier(schema, "actorq_jobs").as_string(None)
    keys = _sql.Identifier(schema, "actorq_key_rules").as_string(None)
    tick = _sql.Identifier(schema, "actorq_key_tick").as_string(None)
    flow_space = "hashtext(" + _sql.Literal(f"actorq.flow:{schema}").as_string(None) + ")"
    return {
        "declare": (
            f"UPDATE {tasks} t SET key_rate = d.key_rate, key_per_second = d.key_per_second, key_burst = d.key_burst,"
            " key_breaker_failures = d.failures, key_breaker_window = d.b_window, key_breaker_cool_down = d.cool_down,"
            " key_breaker_probes = d.probes"
            " FROM unnest(%(names)s::text[], %(key_rate)s::text[], %(key_per_second)s::float8[], %(key_burst)s::int4[],"
            "  %(failures)s::int4[], %(window)s::float8[], %(cool_down)s::float8[], %(probes)s::int4[])"
            "  AS d(name, key_rate, key_per_second, key_burst, failures, b_window, cool_down, probes)"
            " WHERE t.name = d.name"
        ),
        "read": (f"SELECT name, queue, priority, max_attempts, key_rate, key_burst, key_breaker_failures,"
                 f" key_breaker_window, key_breaker_cool_down, key_breaker_probes FROM {tasks}"
                 " WHERE key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL"),
        # the keyed jobs of current leases about to fail, locked (the fail statement then ends
        # them), in key order: their keys' breakers count the failures before the statement's
        # triggers admit the keys' next jobs
        "failing": (
            f"SELECT j.task, j.flow_key FROM {jobs} j"
            " JOIN unnest(%(ids)s::text[], %(lease_ids)s::int8[]) AS f(id, lease_id) ON j.id = f.id"
            " WHERE j.lease_id = f.lease_id AND j.state = 'leased' AND j.flow_key IS NOT NULL"
            " AND j.task = ANY(%(tasks)s::text[]) ORDER BY j.flow_key, j.task FOR UPDATE OF j"
        ),
        # the keys' locks, shared as a finisher's trigger takes them (migration 012), before their rows'
        "lock_shared": (f"SELECT count(pg_advisory_xact_lock_shared({flow_space}, d.h)) FROM (SELECT DISTINCT"
                        f" {LOCK_BUCKET.format(key='k')} AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY h) d"),
        # a failed attempt's key row, locked until the commit: every node's failures count once
        "ensure": (f"INSERT INTO {keys} (task, flow_key, changed_at) VALUES (%(task)s, %(key)s,"
                   " extract(epoch FROM now())) ON CONFLICT DO NOTHING"),
        "lock": (f"SELECT tokens, tokens_at, state, failed_at, opened_at, extract(epoch FROM now())::float8"
                 f" FROM {keys} WHERE task = %(task)s AND flow_key = %(key)s FOR UPDATE"),
        "put": (f"UPDATE {keys} SET state = %(state)s, failed_at = %(failed_at)s, opened_at = %(opened_at)s,"
                " due_at = %(due_at)s, idle_at = %(idle_at)s, changed_at = extract(epoch FROM now())"
                " WHERE task = %(task)s AND flow_key = %(key)s"),
        # a probe's success closes a half-open key: the keys of the jobs this complete ended
        "close": (
            f"UPDATE {keys} k SET state = 'closed', failed_at = '[]', changed_at = extract(epoch FROM now()),"
            " idle_at = greatest(extract(epoch FROM now()), coalesce(k.tokens_at"
            "  + greatest(0, t.key_burst - k.tokens) / t.key_per_second, 0))"
            f" FROM {jobs} j, {tasks} t WHERE j.id = ANY(%(ids)s::text[]) AND j.state = 'succeeded'"
            "  AND k.task = j.task AND k.flow_key = j.flow_key AND k.state = 'half_open' AND t.name = k.task"
            " RETURNING k.flow_key"
        ),
        "tick": f"SELECT {tick}(%(keys)s, %(pruned)s)",
        "drop": f"DELETE FROM {keys} WHERE task = ANY(%(tasks)s::text[])",
        "has_due": (f"SELECT EXISTS (SELECT 1 FROM {keys} WHERE due_at <= extract(epoch FROM now()))"
                    f" OR EXISTS (SELECT 1 FROM {keys} WHERE idle_at <= extract(epoch FROM now()) AND due_at IS NULL)"),
        "not_closed": (
            f"SELECT task, flow_key, tokens, tokens_at, state, failed_at, opened_at FROM {keys}"
            " WHERE state <> 'closed' ORDER BY state = 'half_open', task, flow_key LIMIT %(limit)s"
        ),
        "not_closed_counts": f"SELECT state, count(*) FROM {keys} WHERE state <> 'closed' GROUP BY state",
    }


__all__ = ["DEFAULT_SCHEMA", "Listener", "PostgresJournal", "channel_of", "enqueue_in", "migrate"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BACKOFF = 5.0
# A peer that vanished without a FIN (a cut network) is noticed within ~25 s, not hours.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
# SQLSTATEs after which the same transaction may well succeed if run again: deadlock,
# serialization failure, lock wait past lock_timeout, the session ended for idling in a
# transaction (it was paused), or by an administrator or a server shutdown.
TRANSIENT_STATES = frozenset({"40P01", "40001", "55P03", "25P03", "57P01", "57P02"})
# The server ended the session before the statement arrived (it says why, then closes).
_SESSION_ENDED = frozenset({"25P03", "57P01", "57P02", "57P03"})
_MIGRATION_FILE = re.compile(r"postgres_(\d{3})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change (``sql/postgres_NNN_name.sql``)."""

    version: int
    name: str
    text: str


def _load_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("actorq.journal").joinpath("sql").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"actorq's PostgreSQL migrations are not numbered 1..n: {[m.version for m in found]}")
    return tuple(found)


MIGRATIONS = _load_migrations()


def _latest() -> int:
    return MIGRATIONS[-1].version


# -- migrations ------------------------------------------------------------------------------


def _schema_state(conn: psycopg.Connection[Any], schema: str) -> tuple[bool, int, int | None]:
    """(schema exists, number of relations in it, migrated version or None without a migrations table)."""
    exists, relations, has_table = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(s)s),"
        " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = %(s)s),"
        " to_regclass(%(t)s) IS NOT NULL",
        {"s": schema, "t": table(schema, "actorq_migrations")},
    ).fetchone()  # type: ignore[misc]
    version = None
    if has_table:
        version = conn.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(
            sql.Identifier(schema, "actorq_migrations"))).fetchone()[0]  # type: ignore[index]
    return exists, relations, version


def _apply_migrations(conn: psycopg.Connection[Any], schema: str, where: str) -> list[int]:
    """Apply the missing migrations in one transaction, under a per-schema advisory lock."""
    ident = sql.Identifier(schema)
    applied: list[int] = []
    with conn.transaction():
        # Two nodes starting on a fresh schema: the second waits here, then finds it migrated.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('actorq.migrate'), hashtext(%s))", (schema,))
        exists, relations, version = _schema_state(conn, schema)
        if version is None and relations:
            raise JournalError(f"schema {schema!r} at {where} holds tables but no actorq_migrations table: "
                               "it is not an actorq journal; choose another schema")
        if version is not None and version > _latest():
            raise JournalError(f"journal schema {schema!r} at {where} has version {version}; this actorq knows "
                               f"versions up to {_latest()}. Upgrade actorq to use it.")
        if not exists:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        if version is None:
            conn.execute(sql.SQL(
                "CREATE TABLE {}.actorq_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())").format(ident))
            version = 0
        # The files name their tables unqualified: they land in the journal's schema.
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        for migration in MIGRATIONS:
            if migration.version <= version:
                continue
            if migration.text.strip():  # a placeholder kept for a number another feature owns
                conn.execute(migration.text)
            conn.execute(sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(
                sql.Identifier(schema, "actorq_migrations")), (migration.version, migration.name))
            applied.append(migration.version)
    for number in applied:
        logger.info("journal schema %r at %s: applied migration %03d", schema, where, number)
    return applied


def migrate(url: str, schema: str = DEFAULT_SCHEMA, *,
            connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR) -> list[int]:
    """Create or upgrade the journal schema `schema` in the database at `url`.

    Safe to run from several processes at once (an advisory lock serialises them) and
    again after it succeeded (it then applies nothing).

    Args:
        url: a ``postgresql://`` URL (libpq environment variables and ``.pgpass`` apply).
        schema: the journal's schema, created if missing.
        connect_retry_for: seconds to retry an unreachable server.

    Returns:
        The versions applied now, in order ([] when already up to date).

    Raises:
        ValueError: `schema` is not a valid schema name.
        JournalError: the server cannot be reached, the schema holds something else or
            a newer version, or a migration failed (nothing of it is applied).
    """
    check_schema(schema)
    connector = Connector(url, retry_for=connect_retry_for, max_backoff=DEFAULT_MAX_BACKOFF, purpose="migrate")
    with connector.connect() as conn:
        try:
            return _apply_migrations(conn, schema, connector.where)
        except psycopg.Error as exc:
            raise JournalError(f"migrating journal schema {schema!r} at {connector.where} failed: "
                               f"{connector.scrub(str(exc).strip())}") from None


# -- the journal -------------------------------------------------------------------------------


def _enqueue_params(jobs: Sequence[NewJob], channel: str) -> dict[str, Any]:
    return {
        "ids": [j.id for j in jobs], "queues": [j.queue for j in jobs], "tasks": [j.task for j in jobs],
        "payloads": [j.payload for j in jobs], "priorities": [j.priority for j in jobs],
        "run_at": [j.run_at for j in jobs], "max_attempts": [j.max_attempts for j in jobs],
        "unique_keys": [j.unique_key for j in jobs], "timeouts": [j.timeout for j in jobs],
        "unique_for": [j.unique_for for j in jobs], "flow_keys": [j.flow_key for j in jobs],
        "flow_limits": [j.flow_limit for j in jobs], "discards": [j.discard_over_limit for j in jobs],
        "ordinals": _limits.key_ordinals(jobs)[0], "channel": channel,
    }


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: an error text keeps the rest, with U+FFFD in its place."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _pairs(pairs: Sequence[tuple[str, int]]) -> dict[str, Any]:
    # An id with a NUL (only a malformed ack can carry one) names no job: it is stale, not an error.
    pairs = [p for p in pairs if "\x00" not in p[0]]
    return {"ids": [p[0] for p in pairs], "lease_ids": [p[1] for p in pairs]}


def _add_busy(busy: list[tuple[str, int]] | None, params: dict[str, Any], busy_ids: Collection[str] | None) -> None:
    """Append to `busy` the pairs of `params` (from `_pairs`) whose job id is in `busy_ids`."""
    if busy_ids and busy is not None:
        wanted = set(busy_ids)
        busy.extend(p for p in zip(params["ids"], params["lease_ids"]) if p[0] in wanted)


class PostgresJournal:
    """A `Journal` in one schema of a PostgreSQL database.

    Args:
        url: ``postgresql://user@host:port/dbname`` (or ``postgres://``); libpq environment
            variables, ``PGPASSFILE``/``~/.pgpass`` and service files apply.
        schema: the journal's schema (default ``actorq``); see `DEFAULT_SCHEMA`.
        create_schema: migrate a schema that does not exist yet or is empty on open.
        connect_retry_for: seconds to retry an unreachable server, at open and on reconnect.
        max_backoff: the longest sleep between connection attempts.
        lock_timeout: the longest a statement waits for a row lock another session holds
            (the server's ``lock_timeout``); past it the statement fails with a transient
            `JournalError`.
        idle_in_transaction_timeout: the server ends this session if it sits that long in
            a transaction without a statement (a paused or cut-off process), releasing
            its locks (``idle_in_transaction_session_timeout``).
        application_name: how the session shows in ``pg_stat_activity`` (default
            ``actorq journal``; the URL's or ``PGAPPNAME`` win).
        purpose: what log lines about the connection call it (``journal``).

    Raises:
        ValueError: `schema` is not a valid schema name.
        JournalError: the server cannot be reached (the message names host:port and the
            cause, never the password); the schema is not migrated ("run ``actorq
            migrate``"), is newer than this actorq, or holds something else.
    """

    shared: ClassVar[bool] = True
    """Many nodes share one schema: claims skip each other's rows (SKIP LOCKED)."""
    notifies: ClassVar[bool] = True
    """`Listener` wakes dispatchers from LISTEN/NOTIFY."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        create_schema: bool = True,
        connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        idle_in_transaction_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        application_name: str | None = None,
        purpose: str = "journal",
    ) -> None:
        self.schema = check_schema(schema)
        self.url = redact_url(url)
        self._sql: Statements = statements(schema)
        self._queues = _limits.LimitsCache()
        self._rules = _limits.LimitsCache()  # the tasks declared with rules, read again every 5 s
        self._key_rules = _limits.LimitsCache()  # the tasks declared with rules per key, the same way
        self.rate_wait: float | None = None
        """After a lease: seconds until the next token of a rate it found empty (None: no bucket ran out)."""
        self._claims_held: set[str] = set()  # queues whose claim lock this transaction holds
        self._fills_held = False  # whether it holds a fill lock (an enqueue into a queue with a max_depth)
        for name, value in (("lock_timeout", lock_timeout), ("idle_in_transaction_timeout", idle_in_transaction_timeout)):
            if not 0 < value <= MAX_SECONDS:
                raise ValueError(f"{name} must be seconds > 0 and <= {MAX_SECONDS:.0f}, got {value!r}")
        # ms, at least 1 (0 would mean "no limit")
        self._limits = (max(1, round(lock_timeout * 1000)), max(1, round(idle_in_transaction_timeout * 1000)))
        extra: dict[str, Any] = dict(_KEEPALIVES)
        if application_name:
            extra["application_name"] = application_name[:63]  # the server keeps 63 bytes
        self._connector = Connector(url, retry_for=connect_retry_for, max_backoff=max_backoff, purpose=purpose,
                                    **extra)
        self._conn: psycopg.Connection[Any] | None = None
        self._depth = 0
        conn = self._connector.connect()
        try:
            self._check_version(conn, create_schema)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._error(exc) from None
            raise
        self._conn = self._tune(conn)

    @classmethod
    def from_config(cls, config: JournalConfig, *, create: bool = True,
                    application_name: str | None = None, purpose: str = "journal") -> PostgresJournal:
        """Open the journal `config` describes: its `url`, `schema`, `connect_retry_for`,
        `lock_timeout` and `idle_in_transaction_timeout` (their defaults when unset).

        Args:
            config: the ``[journal]`` settings.
            create: False: a schema not migrated yet is an error (`create_schema`).
            application_name: how the session shows in ``pg_stat_activity``.
            purpose: what log lines about the connection call it.

        Raises:
            ValueError, JournalError: as the constructor.
        """
        return cls(config.url, schema=config.schema, create_schema=create, connect_retry_for=config.connect_retry_for,
                   lock_timeout=config.lock_timeout or DEFAULT_LOCK_TIMEOUT,
                   idle_in_transaction_timeout=config.idle_in_transaction_timeout or DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
                   application_name=application_name, purpose=purpose)

    def _tune(self, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """Set the session up: bounded waits, and custom plans.

        Bounded waits: no statement waits longer than ``lock_timeout`` for a lock, and the
        server ends the session after ``idle_in_transaction_timeout`` inside a transaction
        without a statement. A node paused or cut off in the middle of a transaction so
        holds its locks that long at most, and another node never waits on it longer.

        Custom plans: psycopg prepares a statement after a few runs, and PostgreSQL then
        settles on a generic plan. Once the table has statistics, the generic plan of
        ``complete`` (and ``fail``, ``release``) walks every leased row for each ack:
        20-26 ms per 256 acks instead of ~3, and twice that with two nodes. Custom plans
        look the acked ids up by primary key whatever the statistics say.
        """
        lock_ms, idle_ms = self._limits
        conn.execute("SET plan_cache_mode = force_custom_plan")
        conn.execute(f"SET lock_timeout = {lock_ms}")
        conn.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        return conn

    def _check_version(self, conn: psycopg.Connection[Any], create: bool) -> None:
        where, schema = self._connector.where, self.schema
        _, relations, version = _schema_state(conn, schema)
        if version == _latest():
            return
        if version is None and not relations:
            if not create:
                raise JournalError(f"journal schema {schema!r} at {where} does not exist yet: run `actorq migrate`")
            _apply_migrations(conn, schema, where)
            return
        if version is not None and version < _latest():
            raise JournalError(f"journal schema {schema!r} at {where} has version {version}; this actorq needs "
                               f"version {_latest()}: run `actorq migrate`")
        _apply_migrations(conn, schema, where)  # refuses a foreign or newer schema with a clear message

    # -- transactions ------------------------------------------------------------------------
    def _error(self, exc: psycopg.Error, doing: str = "", *, at_commit: bool = False) -> JournalError:
        cause = self._connector.scrub(" ".join(str(exc).split()))
        text = f"journal {self.url} (schema {self.schema}): {doing}{cause}"
        lost = self._conn is not None and self._conn.closed
        if lost:
            text += "; the connection was lost, the next operation reconnects"
        # A lost connection before COMMIT was sent: the server rolled the transaction back.
        transient = exc.sqlstate in TRANSIENT_STATES or (lost and not at_commit)
        refused = (exc.sqlstate or "")[:2] in ("22", "23")  # a data exception, an integrity constraint
        return JournalError(text, transient=transient, maybe_committed=lost and at_commit, refused=refused)

    def _reconnect(self) -> psycopg.Connection[Any]:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._conn = self._tune(self._connector.connect())
        return self._conn

    def _first(self, query: str, params: dict[str, Any] | None, *, again: Callable[[psycopg.Error], bool],
               at_commit: bool) -> tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]:
        """Run `query` first on the connection (reconnecting if it is closed); if it fails because
        the connection was lost and `again(error)` says the query cannot have run, run it once more
        on a new connection. Returns the connection and the cursor."""
        conn = self._conn if self._conn is not None and not self._conn.closed else self._reconnect()
        try:
            return conn, conn.execute(query, params)
        except psycopg.Error as exc:
            if not (conn.closed and again(exc)):
                raise self._error(exc, at_commit=at_commit) from None
        conn = self._reconnect()
        try:
            return conn, conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._error(exc, at_commit=at_commit) from None

    def _begin(self) -> psycopg.Connection[Any]:
        # A BEGIN that meets a connection the server dropped while idle (a restart,
        # pg_terminate_backend) sent nothing of the transaction: beginning again is safe.
        return self._first("BEGIN", None, again=lambda exc: isinstance(exc, psycopg.OperationalError),
                           at_commit=False)[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN`` ... ``COMMIT``; a nested use joins the outer transaction.

        Raises:
            JournalError: the transaction could not commit (the connection was lost, or a
                statement failed and its error was swallowed); nothing inside was committed.
        """
        if self._depth:
            conn = self._conn
            if conn is None or conn.closed or conn.info.transaction_status != TransactionStatus.INTRANS:
                raise JournalError(f"journal {self.url} (schema {self.schema}): the transaction was lost "
                                   "(connection lost or an earlier statement failed); nothing in it will be committed")
            self._depth += 1
            try:
                yield
            except psycopg.Error as exc:
                raise self._error(exc) from None
            finally:
                self._depth -= 1
            return
        conn = self._begin()
        self._depth = 1
        try:
            yield
            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise JournalError(f"journal {self.url} (schema {self.schema}): the transaction was "
                                   "rolled back by an earlier error; nothing in it was committed")
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                raise self._error(exc, "COMMIT failed, its outcome is unknown: " if conn.closed else "",
                                  at_commit=True) from None
        except BaseException as exc:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # the connection went away meanwhile: the server rolls back
            if isinstance(exc, psycopg.Error):
                raise self._error(exc) from None
            raise
        finally:
            self._depth = 0
            self._claims_held.clear()  # transaction locks: released at its end
            self._fills_held = False
            if conn.closed:
                self._conn = None

    def _execute(self, query: str, params: dict[str, Any], *, isolated: bool = False) -> psycopg.Cursor[Any]:
        """Run one statement in its own transaction, or as part of the caller's.

        In the caller's transaction a failing statement aborts all of it (its COMMIT then
        raises), except an `isolated` one: it runs under a savepoint and fails alone, as a
        failed statement does in SQLite. Only enqueue is isolated: it is the one statement
        whose values (a job's fields) can be refused by the schema. A savepoint costs two
        round trips (~0.12 ms here) and a subtransaction, so the others, whose values the
        journal made itself, run without.
        """
        if self._depth == 0:
            return self._alone(query, params)
        with self.transaction():
            conn = self._conn
            assert conn is not None
            if not (isolated and self._depth > 1):
                return conn.execute(query, params)
            conn.execute("SAVEPOINT actorq_isolated")
            try:
                cursor = conn.execute(query, params)
            except psycopg.Error:
                if not conn.closed:
                    conn.execute("ROLLBACK TO SAVEPOINT actorq_isolated")
                    conn.execute("RELEASE SAVEPOINT actorq_isolated")
                raise
            conn.execute("RELEASE SAVEPOINT actorq_isolated")
            return cursor

    def _alone(self, query: str, params: dict[str, Any]) -> psycopg.Cursor[Any]:
        """One statement outside any transaction: one round trip, atomic by itself.

        A session the server ended while it sat idle (a restart, ``pg_terminate_backend``,
        an idle timeout) answers the next statement with the reason it was ended, which it
        sent before the statement arrived: that statement never ran, so it is sent again on
        a new connection. A connection lost any other way leaves its outcome unknown.
        """
        return self._first(query, params, again=lambda exc: exc.sqlstate in _SESSION_ENDED, at_commit=True)[1]

    def attach_node(self) -> None:
        """Check that this role may write the journal. Takes no lock: PostgreSQL allows many nodes.

        Raises:
            JournalError: the role lacks a privilege the journal needs (named in the message).
        """
        names = {"jobs": table(self.schema, "actorq_jobs"), "errors": table(self.schema, "actorq_errors"),
                 "tasks": table(self.schema, "actorq_tasks"), "lease_ids": table(self.schema, "actorq_lease_ids"),
                 "schedules": table(self.schema, "actorq_schedules")}
        if not self._execute(self._sql.privileges, names).fetchone()[0]:  # type: ignore[index]
            raise JournalError(
                f"journal {self.url} (schema {self.schema}): this role may not write the journal; it needs "
                f"SELECT, INSERT and UPDATE on {names['jobs']}, on {names['tasks']} and on {names['schedules']}, "
                f"DELETE on {names['schedules']}, SELECT and INSERT "
                f"on {names['errors']} and USAGE on {names['lease_ids']}")

    # -- transitions ---------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], *, refused: list[tuple[NewJob, QueueFull]] | None = None) -> int:
        """Insert `jobs` as ready, or scheduled when `run_at` is later than the database's now.

        A queue with a ``max_depth`` first takes its fill lock (a transaction advisory lock,
        every node's enqueuers of it one at a time), then counts its waiting jobs in a
        following statement and inserts what fits (see `Journal.enqueue`).

        Raises:
            QueueFull: a job would take its queue past ``max_depth`` (`refused` not given).
        """
        if not jobs:
            return 0
        full = _limits.depth_limited(self._stored_limits(), jobs)
        if not full:
            return self._insert(jobs)
        limit_sql = _limit_statements(self.schema)
        with self.transaction():
            most = {row[1]: row[2] for row in self._execute(limit_sql["fill"], {"queues": full}).fetchall()}
            self._fills_held = True  # from now on this transaction only tries claim locks
            rooms, present = {}, set()
            if most:
                depths = self._execute(limit_sql["depth"], {"queues": sorted(most)}).fetchall()
                rooms = {queue: (depth, most[queue]) for queue, depth in depths}
                ids = [j.id for j in jobs if j.queue in most and "\x00" not in j.id]
                present = {row[0] for row in self._execute(limit_sql["present"], {"ids": ids}).fetchall()}
            jobs = _limits.admit(jobs, rooms, refused, present)
            return self._insert(jobs) if jobs else 0

    def _insert(self, jobs: Sequence[NewJob]) -> int:
        """Insert `jobs` as ready, or scheduled when `run_at` is later than the database's now.

        Ids already present are skipped (idempotent re-send), and so are jobs whose unique
        key is held (see `Journal.enqueue`); a batch with keys first takes each key's
        transaction lock (`lock_keys`), held to the commit. Notifies the schema's channel
        once per queue that got ready jobs. Returns the number inserted.
        """
        if not jobs:
            return 0
        if not any(j.unique_key is not None or j.flow_key is not None for j in jobs):  # one statement
            row = self._execute(self._sql.enqueue, _enqueue_params(jobs, self._sql.channel), isolated=True).fetchone()
            return row[0]  # type: ignore[index]
        in_caller_transaction = self._depth > 0
        with self.transaction():
            return _enqueue_locked(lambda query, params: self._execute(query, params, isolated=in_caller_transaction),
                                   self._sql, jobs)

    def lease(self, queues: Sequence[str], owner: str, limit: int, lease_for: float) -> list[LeasedJob]:
        """Lease up to `limit` ready jobs of `queues` to `owner` for `lease_for` s, counting an attempt each.

        Jobs are chosen by priority, then id, skipping rows other transactions hold locked;
        ``lease_for=math.inf`` never expires. The returned list is in no particular order.
        """
        self.rate_wait = None
        if limit <= 0 or not queues:
            return []
        params = {"owner": owner, "limit": limit, "lease_for": lease_for}
        ruled = _limits.lease_ruled(self._rules.get(self.task_rules), queues)
        limited = self._queues.lease_limited(self._stored_limits(), queues)
        if limited or ruled:
            return self._lease_ruled(limited, ruled, queues, params)
        if len(queues) == 1:
            rows = self._execute(self._sql.lease, {**params, "queue": queues[0]}).fetchall()
        else:
            rows = self._execute(self._sql.lease_queues, {**params, "queues": list(queues)}).fetchall()
        return [LeasedJob(*row) for row in rows]

    def _lease_ruled(self, limited: Sequence[str], ruled: Sequence[str], queues: Sequence[str],
                     params: dict[str, Any]) -> list[LeasedJob]:
        """Lease each limited queue alone, under its claim lock and within its room, then the
        others in one statement; the `ruled` tasks' jobs of each, first, by their own
        statements (`_lease_some`); all in one transaction."""
        limit_sql = _limit_statements(self.schema)
        rows: list[Any] = []
        lifted: set[str] = set()
        stored = self._stored_limits()
        rated = {q for q in limited if q in stored and stored[q].rate is not None}
        prefix = self._queues.node_prefix
        with self.transaction():
            for queue in limited:  # sorted: two claimers take the locks in one order
                held = self._claims_held
                wait = queue in held or not (held or self._fills_held)  # see "try_claim"
                granted, concurrency = self._execute(limit_sql["claim" if wait else "try_claim"],
                                                     {"queue": queue}).fetchone()  # type: ignore[misc]
                if not granted:
                    continue
                held.add(queue)
                node_limit = self._queues.node.get(queue)
                # the cache says which queues have a rate (as it says which are limited): a queue
                # with a concurrency only pays no round trip for a bucket
                room = params["limit"] - len(rows)
                bucket = (self._execute(limit_sql["reserve"], {"queue": queue, "want": room}).fetchone()
                          if queue in rated else None)
                if concurrency is None and node_limit is None and bucket is None:
                    lifted.add(queue)  # lifted since the cache was read: leased with the others below
                    continue
                if bucket is not None:
                    tokens, taken, per_second = bucket
                    room = min(room, taken)
                if not ruled:  # the count inside the lease statement: one round trip
                    got = self._execute(limit_sql["lease"], {
                        **params, "limit": room, "queue": queue, "concurrency": concurrency,
                        "node_concurrency": node_limit, "prefix": prefix}).fetchall() if room > 0 else []
                else:  # its ruled tasks lease first, within the queue's room: counted apart
                    if room > 0 and (concurrency is not None or node_limit is not None):
                        leased, node_leased = self._execute(_rule_statements(self.schema)["queue_leased"], {
                            "queue": queue, "prefix": prefix}).fetchone()  # type: ignore[misc]
                        room = _limits.room(room, concurrency, node_limit, leased, node_leased)
                    got = self._lease_some([queue], room, ruled, params) if room > 0 else []
                rows += got
                if bucket is not None:  # taken up front: what the lease did not use goes back
                    if len(got) < taken:
                        self._execute(limit_sql["refund"], {"queue": queue, "back": taken - len(got)})
                    self._note_wait(tokens - len(got), per_second)
                if len(rows) >= params["limit"]:
                    return [LeasedJob(*row) for row in rows]
            rest = [q for q in queues if q not in limited or q in lifted]
            if rest:
                rows += self._lease_some(rest, params["limit"] - len(rows), ruled, params)
        return [LeasedJob(*row) for row in rows]

    def _lease_some(self, queues: Sequence[str], limit: int, ruled: Sequence[str], params: dict[str, Any]) -> list[Any]:
        """Lease up to `limit` of `queues`: without `ruled` tasks, today's one statement; with,
        each ruled task's room read under its claim lock, then the jobs of those whose rule
        binds (a room below `limit`) by a statement each within it, then the others by the one
        statement, those tasks' jobs left out. A rule that does not bind adds only its reads."""
        one = len(queues) == 1
        where = {"queue": queues[0]} if one else {"queues": list(queues)}
        if not ruled:
            return self._execute(self._sql.lease if one else self._sql.lease_queues,
                                 {**params, **where, "limit": limit}).fetchall()
        rule_sql = _rule_statements(self.schema)
        rooms: dict[str, int] = {}  # the tasks whose rule binds in this lease: their room
        buckets: dict[str, tuple[float, float, float]] = {}  # task: (tokens refilled, now, per second)
        for task in ruled:  # sorted: two claimers take the locks in one order
            held, key = self._claims_held, "\x00task:" + task  # no queue name holds a NUL
            wait = key in held or not (held or self._fills_held)  # see "try_claim" of a queue
            if not self._execute(rule_sql["claim" if wait else "try_claim"], {"task": task}).fetchone()[0]:  # type: ignore[index]
                rooms[task] = 0  # another claimer holds it: its jobs wait for the next lease
                continue
            held.add(key)
            row = self._execute(rule_sql["rules"], {"task": task}).fetchone()
            if row is None:
                continue
            take = limit
            concurrency, tokens, since, per_second, burst, now, leased, *breaker_row = row
            breaker = _limits.breaker_of(*breaker_row[:4])
            if breaker is not None and breaker_row[4] is not None:
                take = min(take, self._breaker_room(rule_sql, task, breaker, breaker_row[4:], now, leased, take))
            if per_second is not None:
                buckets[task] = (_limits.refill(tokens, since, now, per_second, burst), now, per_second)
                take = min(take, _limits.whole(buckets[task][0]))
            if concurrency is not None:
                take = min(take, concurrency - leased)
            if take < limit:
                rooms[task] = max(0, take)
        rows: list[Any] = []
        for task, room in rooms.items():
            if room > 0 and len(rows) < limit:
                rows += self._execute(rule_sql["lease_task_one" if one else "lease_task"], {
                    **params, **where, "limit": min(room, limit - len(rows)), "task": task}).fetchall()
        if len(rows) < limit:
            more = {**params, **where, "limit": limit - len(rows)}
            if rooms:
                rows += self._execute(rule_sql["lease_others_one" if one else "lease_others"],
                                      {**more, "ruled": list(rooms)}).fetchall()
            else:
                rows += self._execute(self._sql.lease if one else self._sql.lease_queues, more).fetchall()
        for task, (tokens, now, per_second) in buckets.items():  # each bucket pays for its task's jobs
            self._spend(rule_sql["spend"], {"task": task}, tokens, sum(1 for r in rows if r[2] == task), now,
                        per_second)
        return rows

    def _breaker_room(self, rule_sql: dict[str, str], task: str, breaker: CircuitBreaker, stored: Sequence[Any],
                      now: float, leased: int, limit: int) -> int:
        """What `task`'s breaker lets a lease take (see `_limits.breaker_room`); an open breaker
        past its cool-down is moved to half-open here."""
        state, _failed_at, opened_at = stored
        room, now_state, wait = _limits.breaker_room(breaker, state, opened_at, now, leased)
        if now_state != state:
            if self._execute(rule_sql["breaker_half_open"], {"task": task}).rowcount != 1:
                return 0  # a failure moved it meanwhile: lease nothing of it this time
            logger.info("task %s: circuit breaker half-open (%d probes)", task, breaker.probes)
        self.rate_wait = _limits.sooner(self.rate_wait, wait)
        return limit if room is None else room

    def breakers(self) -> list[BreakerState]:
        """Where each declared circuit breaker stands, by task name."""
        rows = self._execute(_rule_statements(self.schema)["breakers"], {}).fetchall()
        return [_limits.breaker_state(*row) for row in rows]

    def _breakers_failed(self, tasks: Sequence[str]) -> None:
        """Count a failed attempt of each of `tasks` (those with a breaker) in its breaker, under its row lock."""
        rules = self._rules.get(self.task_rules)
        rule_sql = _rule_statements(self.schema)
        for task in sorted(tasks):  # one order: two nodes' transactions never wait in a cycle
            declared = rules.get(task)
            if declared is None or declared.circuit_breaker is None:
                continue
            row = self._execute(rule_sql["breaker_lock"], {"task": task}).fetchone()
            if row is None:
                continue
            state, failed_at, opened_at, now = row
            after = _limits.breaker_failed(declared.circuit_breaker, state, failed_at, opened_at, now)
            if after != (state, failed_at, opened_at):
                self._execute(rule_sql["breaker_put"], {"task": task, "state": after[0], "failed_at": after[1],
                                                        "opened_at": after[2]})
                if after[0] != state:
                    logger.warning("task %s: circuit breaker open (%s)", task,
                                   "a probe failed" if state == _limits.HALF_OPEN else "too many failed attempts")

    def _keys_failed(self, failed: Sequence[tuple[str, str]], rules: Mapping[str, TaskDefaults]) -> None:
        """Count a failed attempt of each (task, key) whose task has a key breaker, under the key
        row's lock (sorted: two nodes' transactions never wait in a cycle)."""
        key_sql = _key_statements(self.schema)
        for task, key in sorted(failed):
            declared = rules.get(task)
            if declared is None or declared.key_circuit_breaker is None:
                continue
            self._execute(key_sql["ensure"], {"task": task, "key": key})
            row = self._execute(key_sql["lock"], {"task": task, "key": key}).fetchone()
            if row is None:
                continue
            before = _limits.KeyRow(*row[:5])
            after, due, idle = _limits.key_failed(declared, before, row[5])
            self._execute(key_sql["put"], {"task": task, "key": key, "state": after.state, "failed_at": after.failed_at,
                                           "opened_at": after.opened_at, "due_at": due, "idle_at": idle})
            _limits.log_key_opened(logger, task, key, before, after)

    def key_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its per-key rules}`` of every declared task with a key rate or a key breaker."""
        rows = self._execute(_key_statements(self.schema)["read"], {}).fetchall()
        return {row[0]: _limits.key_rules_of(row) for row in rows}

    def key_breakers(self, limit: int) -> tuple[list[BreakerState], dict[str, int]]:
        """The per-key breakers not closed: at most `limit`, and how many by state (see `Journal.key_breakers`)."""
        ruled = self._key_rules.get(self.key_rules)
        if not ruled:
            return [], {}
        key_sql = _key_statements(self.schema)
        rows = self._execute(key_sql["not_closed"], {"limit": max(0, limit)}).fetchall()
        counts = dict(self._execute(key_sql["not_closed_counts"], {}).fetchall())
        return _limits.key_breaker_listing(rows, counts, ruled)

    def _spend(self, statement: str, names: dict[str, str], tokens: float, taken: int, now: float,
               per_second: float) -> None:
        """Write back what a lease of `taken` jobs left in the bucket `names` picks (a queue's or
        a task's), refilled to `now`; note when the next token is due if none is left (`rate_wait`)."""
        left = tokens - taken
        if taken:  # nothing taken: the stored tokens refill to the same value later
            self._execute(statement, {**names, "tokens": left, "at": now})
        self._note_wait(left, per_second)

    def _note_wait(self, left: float, per_second: float) -> None:
        """A bucket left with `left` tokens: if not one whole, say when the next is due (`rate_wait`)."""
        self.rate_wait = _limits.sooner(self.rate_wait, _limits.bucket_wait(left, per_second))

    def _stored_limits(self) -> dict[str, QueueLimits]:
        return self._queues.get(self.queue_limits)

    def declare_queues(self, limits: Sequence[QueueLimits], node_prefix: str = "") -> None:
        """Store `limits` in one statement (each replaces its queue's row; sorted: two nodes
        starting never deadlock) and keep their ``node_concurrency`` for leases by owners
        starting with `node_prefix` (this node's workers).

        Raises:
            ValueError: a limit is not an integer from 1 to `MAX_QUEUE_LIMIT` (or None).
        """
        _limits.check_limits(limits)
        latest = sorted({q.queue: q for q in limits}.values())
        if latest:
            rates = [_limits.parse_rate(q.rate, q.burst) if q.rate is not None else None for q in latest]
            self._execute(_limit_statements(self.schema)["declare"], {
                "queues": [q.queue for q in latest], "concurrency": [q.concurrency for q in latest],
                "max_depth": [q.max_depth for q in latest], "rate": [q.rate for q in latest],
                "per_second": [None if r is None else r.per_second for r in rates],
                "burst": [None if r is None else r.burst for r in rates]})
        self._queues.node = {q.queue: q.node_concurrency for q in latest if q.node_concurrency is not None}
        self._queues.node_prefix = node_prefix
        self._queues.forget()

    def queue_limits(self) -> dict[str, QueueLimits]:
        """``{queue: stored limits}`` of every declared queue."""
        rows = self._execute(_limit_statements(self.schema)["read"], {}).fetchall()
        return {row[0]: QueueLimits(*row) for row in rows}

    def complete(self, acks: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None,
                 results: Mapping[str, KeptResult] | None = None) -> int:
        """Move ``(job_id, lease_id)`` pairs to succeeded; returns how many were current.

        The jobs named in `results` store their return value in the same statement. A pair
        whose row another transaction holds locked is skipped, not waited for, and appended
        to `busy` when given; the rest were stale.
        """
        if any(t.key_circuit_breaker is not None for t in self._key_rules.get(self.key_rules).values()):
            with self.transaction():  # a key's probe succeeded: its breaker closes in the same commit
                done = self._complete_task_rules(acks, busy, results)
                closed = self._execute(_key_statements(self.schema)["close"],
                                       {"ids": [job_id for job_id, _ in acks if "\x00" not in job_id]}).fetchall()
                if closed:  # the ends' triggers admitted as half-open (and hold the keys' locks): closed now
                    self._execute(self._sql.admit, {"keys": sorted({row[0] for row in closed})})
            return done
        return self._complete_task_rules(acks, busy, results)

    def _complete_task_rules(self, acks: Sequence[tuple[str, int]], busy: list[tuple[str, int]] | None,
                              results: Mapping[str, KeptResult] | None) -> int:
        if any(t.circuit_breaker is not None for t in self._rules.get(self.task_rules).values()):
            with self.transaction():  # a probe's success closes its half-open breaker, in the same commit
                done = self._complete(acks, busy, results)
                self._execute(_rule_statements(self.schema)["breaker_close"],
                              {"ids": [job_id for job_id, _ in acks if "\x00" not in job_id]})
            return done
        return self._complete(acks, busy, results)

    def _complete(self, acks: Sequence[tuple[str, int]], busy: list[tuple[str, int]] | None,
                  results: Mapping[str, KeptResult] | None) -> int:
        if not results:
            return self._settle_pairs(self._sql.complete, acks, busy)
        plain = [pair for pair in acks if pair[0] not in results]
        kept = [pair for pair in acks if pair[0] in results and "\x00" not in pair[0]]
        with self.transaction():
            done = self._settle_pairs(self._sql.complete, plain, busy)
            if kept:
                params = {**_pairs(kept), "data": [results[p[0]].data for p in kept],
                          "keep_for": [float(results[p[0]].keep_for) for p in kept],
                          "done_channel": self._sql.done_channel}
                count, busy_ids, _ = self._execute(self._sql.complete_with_result, params).fetchone()  # type: ignore[misc]
                _add_busy(busy, params, busy_ids)
                done += int(count)
        return done

    def _settle_pairs(self, query: str, pairs: Sequence[tuple[str, int]], busy: list[tuple[str, int]] | None) -> int:
        if not pairs:
            return 0
        params = {**_pairs(pairs), "done_channel": self._sql.done_channel}
        row = self._execute(query, params).fetchone()
        assert row is not None
        _add_busy(busy, params, row[1])
        return int(row[0])

    def fail(self, failures: Sequence[Failure]) -> int:
        """Store each decided outcome whose lease is current (see `Journal.fail`), in one statement.

        Returns:
            How many leases were current.

        Raises:
            ValueError: a state `fail` does not store, or RETRY without retry_at; nothing is recorded.
        """
        check_failures(failures)
        failures = [f for f in failures if "\x00" not in f.job_id]  # names no job: stale
        if not failures:
            return 0
        params = {"ids": [f.job_id for f in failures], "lease_ids": [f.lease_id for f in failures],
                  "errors": [_text(f.error) for f in failures],
                  "states": [JobState(f.state).value for f in failures],
                  "retry_at": [f.retry_at if f.state == JobState.RETRY else None for f in failures],
                  "finished": [f.state in TERMINAL_STATES for f in failures],
                  "tracebacks": [None if f.traceback is None else _text(f.traceback) for f in failures],
                  "done_channel": self._sql.done_channel}
        rules = self._rules.get(self.task_rules)
        key_rules = self._key_rules.get(self.key_rules)
        breakers = sorted(name for name, t in key_rules.items() if t.key_circuit_breaker is not None)
        if breakers:
            key_sql = _key_statements(self.schema)
            with self.transaction():  # the attempts' ends and their keys' (and tasks') breakers commit together
                failing = [tuple(row) for row in self._execute(key_sql["failing"], {
                    "ids": params["ids"], "lease_ids": params["lease_ids"], "tasks": breakers}).fetchall()]
                if failing:
                    self._execute(key_sql["lock_shared"], {"keys": sorted({key for _, key in failing})})
                    self._keys_failed(failing, key_rules)  # type: ignore[arg-type]
                if not any(t.circuit_breaker is not None for t in rules.values()):
                    return int(self._execute(self._sql.fail, params).fetchone()[0])  # type: ignore[index]
                count, tasks, _ = self._execute(_rule_statements(self.schema)["fail_tasks"], params).fetchone()  # type: ignore[misc]
                self._breakers_failed(tasks)
            return int(count)
        if not any(t.circuit_breaker is not None for t in rules.values()):  # no breaker: one statement
            return int(self._execute(self._sql.fail, params).fetchone()[0])  # type: ignore[index]
        with self.transaction():  # the attempts' ends and their breakers commit together
            count, tasks, _ = self._execute(_rule_statements(self.schema)["fail_tasks"], params).fetchone()  # type: ignore[misc]
            self._breakers_failed(tasks)  # each failed attempt counts, two of one task too
        return int(count)

    def release(self, leases: Sequence[tuple[str, int]], *, busy: list[tuple[str, int]] | None = None) -> int:
        """Return leased jobs that never started to ready, giving their attempt back; returns rows moved.

        Rows another transaction holds are skipped and appended to `busy`, as in `complete`.
        """
        return self._settle_pairs(self._sql.release, leases, busy)

    def attempts(self, leases: Sequence[tuple[str, int]], *,
                 busy: list[tuple[str, int]] | None = None) -> list[Attempt]:
        """The ``(job_id, lease_id)`` pairs whose lease is current (locked ``FOR UPDATE``), in no order.

        Rows another transaction holds are skipped and appended to `busy`, as in `complete`.
        """
        if not leases:
            return []
        params = _pairs(list(dict.fromkeys(leases)))
        found: list[Attempt] = []
        busy_ids: set[str] = set()
        for row in self._execute(self._sql.attempts, params).fetchall():
            if row[1] is None:
                busy_ids.add(row[0])
            else:
                found.append(Attempt(*row))
        _add_busy(busy, params, busy_ids)
        return found

    def leased_by(self, owner: str, *, keep: Collection[int] = ()) -> list[Attempt]:
        """Every current lease of `owner` except the lease ids in `keep` (locked ``FOR UPDATE``)."""
        if "\x00" in owner:  # no owner can have it
            return []
        return self._read_attempts(self._sql.leased_by, {"owner": owner, "keep": list(keep)})

    def leased_with_prefix(self, prefix: str) -> list[Attempt]:
        """Every current lease whose owner starts with `prefix` (literally; "" = all), locked ``FOR UPDATE``."""
        if "\x00" in prefix:
            return []
        return self._read_attempts(self._sql.leased_with_prefix, {"prefix": prefix})

    def expired(self) -> list[Attempt]:
        """Every lease expired by the database's clock, skipping rows another transaction holds locked."""
        return self._read_attempts(self._sql.expired, {})

    def _read_attempts(self, query: str, params: dict[str, Any]) -> list[Attempt]:
        return [Attempt(*row) for row in self._execute(query, params).fetchall()]

    def declare_tasks(self, tasks: Sequence[TaskDefaults]) -> None:
        """Record the defaults of `tasks` in one statement, replacing earlier declarations (the last wins).

        Raises:
            JournalError: a declaration was refused (``max_attempts`` below 1); none is recorded.
        """
        # One row per name: an upsert may not touch a row twice in one statement.
        latest = sorted({t.name: t for t in tasks}.values())  # in one order: two nodes starting never deadlock
        if not latest:
            return
        _limits.check_task_rules(latest)
        buckets = [_limits.task_bucket(t) for t in latest]
        breakers = [_limits.breaker_columns(t) for t in latest]
        rule_sql = _rule_statements(self.schema)
        # a task declared again without its breaker: its state goes (a journal that never had a
        # breaker never touches actorq_breakers, nor needs a privilege on it)
        had = [t.name for t in latest if t.circuit_breaker is None
               and getattr(self._rules.get(self.task_rules).get(t.name), "circuit_breaker", None) is not None]
        with self.transaction():
            self._execute(self._sql.declare_tasks, {
                "names": [t.name for t in latest], "queues": [t.queue for t in latest],
                "priorities": [t.priority for t in latest], "max_attempts": [t.max_attempts for t in latest],
                "unique_for": [t.unique_for for t in latest], "concurrency": [t.concurrency for t in latest],
                "rate": [b[0] for b in buckets], "per_second": [b[1] for b in buckets], "burst": [b[2] for b in buckets],
                "breaker_failures": [b[0] for b in breakers], "breaker_window": [b[1] for b in breakers],
                "breaker_cool_down": [b[2] for b in breakers], "breaker_probes": [b[3] for b in breakers],
                "concurrency_limits": [t.concurrency_limit for t in latest],
                "on_conflicts": [t.on_conflict for t in latest],
            }, isolated=True)
            if any(t.circuit_breaker is not None for t in latest):
                self._execute(rule_sql["breaker_declare"],
                              {"tasks": [t.name for t in latest if t.circuit_breaker is not None]})
            if had:
                self._execute(rule_sql["breaker_drop"], {"tasks": had})
            had_keys = [t.name for t in latest if t.name in self._key_rules.get(self.key_rules)
                         and not _limits.has_key_rules(t)]
            if had_keys:  # declared again without rules per key: its keys' rows go
                self._execute(_key_statements(self.schema)["drop"], {"tasks": had_keys})
            keyed = [_limits.key_columns(t) for t in latest]
            self._execute(_key_statements(self.schema)["declare"], {
                "names": [t.name for t in latest], "key_rate": [k[0] for k in keyed],
                "key_per_second": [None if t.key_rate is None else _limits.parse_rate(t.key_rate, t.key_burst).per_second
                                   for t in latest],
                "key_burst": [k[1] for k in keyed], "failures": [k[2] for k in keyed], "window": [k[3] for k in keyed],
                "cool_down": [k[4] for k in keyed], "probes": [k[5] for k in keyed]})
        self._rules.forget()
        self._key_rules.forget()

    def task_rules(self) -> dict[str, TaskDefaults]:
        """``{task: its declaration}`` of every declared task with a concurrency, a rate or a circuit breaker."""
        rows = self._execute(_rule_statements(self.schema)["read"], {}).fetchall()
        return {row[0]: _limits.rules_of(row) for row in rows}

    def declared_tasks(self, names: Sequence[str]) -> dict[str, TaskDefaults]:
        """``{name: its declared defaults}`` for those of `names` that were declared."""
        names = [n for n in names if "\x00" not in n]  # no task can have it
        if not names:
            return {}
        rows = self._execute(self._sql.declared_tasks, {"names": names}).fetchall()
        return {row[0]: TaskDefaults(*row) for row in rows}

    def put_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        """Store `schedules` in one statement, replacing the definitions of stored names (their
        added_at and last_fired are kept).

        Raises:
            JournalError: a row was refused (unknown ``catch_up`` or ``source``); none is stored.
        """
        latest = sorted({row.name: row for row in schedules}.values())  # one row per name, in one order
        if not latest:
            return
        self._execute(self._sql.put_schedules, {
            "names": [r.name for r in latest], "crons": [r.cron for r in latest], "tasks": [r.task for r in latest],
            "payloads": [r.payload for r in latest], "queues": [r.queue for r in latest],
            "timezones": [r.timezone for r in latest], "catch_ups": [r.catch_up for r in latest],
            "sources": [r.source for r in latest], "added_at": [r.added_at for r in latest],
            "last_fired": [r.last_fired for r in latest],
        }, isolated=True)

    def remove_schedules(self, names: Sequence[str]) -> int:
        """Delete the schedules `names`; returns how many there were."""
        names = [n for n in dict.fromkeys(names) if "\x00" not in n]
        if not names:
            return 0
        return self._execute(self._sql.remove_schedule, {"names": names}).rowcount

    def schedules(self) -> list[ScheduleRow]:
        """Every stored schedule, by name."""
        return [ScheduleRow(*row) for row in self._execute(self._sql.schedules, {}).fetchall()]

    def fire_schedule(self, name: str, previous: float | None, fired: float, jobs: Sequence[NewJob]) -> bool:
        """Move `name`'s last_fired from `previous` to `fired` and enqueue `jobs`, or do nothing
        (False) if last_fired is no longer `previous`."""
        with self.transaction():
            cursor = self._execute(self._sql.fire_schedule, {"name": name, "previous": previous, "fired": fired})
            if cursor.rowcount != 1:
                return False
            _limits.enqueue_firing(self.enqueue, name, jobs, logger)  # a full queue skips this firing
            return True

    def renew(self, owners: Sequence[str], lease_for: float) -> int:
        """Extend the leases held by `owners` to the database's now + `lease_for`; returns rows renewed."""
        if not owners:
            return 0
        return self._execute(self._sql.renew, {"owners": list(owners), "lease_for": lease_for}).rowcount

    def promote(self) -> int:
        """Move due scheduled and retry jobs to ready, notifying their queues; returns the number moved."""
        if not self._key_rules.get(self.key_rules):
            return self._execute(self._sql.promote, {"channel": self._sql.channel}).fetchone()[0]  # type: ignore[index]
        with self.transaction():  # and the keys whose rules let them through again (migration 015)
            moved = self._execute(self._sql.promote, {"channel": self._sql.channel}).fetchone()[0]  # type: ignore[index]
            return int(moved) + int(self._execute(_key_statements(self.schema)["tick"], {
                "keys": KEYS_PER_TICK, "pruned": KEY_ROWS_PRUNED_PER_TICK}).fetchone()[0])  # type: ignore[index]

    def has_due(self) -> bool:
        """Whether a scheduled or retry job is due by the database's clock (a read)."""
        if self._execute(self._sql.has_due, {}).fetchone()[0]:  # type: ignore[index]
            return True
        if not self._key_rules.get(self.key_rules):
            return False
        return bool(self._execute(_key_statements(self.schema)["has_due"], {}).fetchone()[0])  # type: ignore[index]

    def take_admitted(self) -> set[str]:
        """Always empty: an admission NOTIFYs the schema's channel itself (migration 012)."""
        return set()

    def has_ready(self, queues: Sequence[str]) -> bool:
        """Whether a job of `queues` is ready (a read)."""
        if not queues:
            return False
        return bool(self._execute(self._sql.has_ready, {"queues": list(queues)}).fetchone()[0])  # type: ignore[index]

    def cancel(self, job_id: str) -> bool:
        """Cancel a scheduled, ready, leased or retry job; False if it is final or unknown.

        Cancelling a leased job clears its lease, so the worker's later answer is stale.
        """
        if "\x00" in job_id:  # no job can have it
            return False
        params = {"id": job_id, "cancel_channel": self._sql.cancel_channel, "done_channel": self._sql.done_channel}
        return self._execute(self._sql.cancel, params).fetchone()[0] == 1  # type: ignore[index]

    def retry_dead(self, job_id: str) -> bool:
        """Make a dead or failed job ready with a fresh set of attempts; its error history is kept."""
        if "\x00" in job_id:
            return False
        row = self._execute(self._sql.retry_dead, {"id": job_id, "channel": self._sql.channel}).fetchone()
        return row[0] == 1  # type: ignore[index]

    # -- reads -------------------------------------------------------------------------------
    def cancelled(self, job_ids: Sequence[str]) -> list[str]:
        """Those of `job_ids` that are cancelled."""
        ids = [i for i in job_ids if "\x00" not in i]
        if not ids:
            return []
        with self.transaction():
            assert self._conn is not None
            return [row[0] for row in self._conn.execute(self._sql.cancelled, {"ids": ids})]

    def pause_queue(self, queue: str) -> bool:
        """Pause `queue` on every node: no lease takes its jobs until `resume_queue`; True if it was running."""
        if "\x00" in queue:  # text cannot hold it: no queue has that name
            raise ValueError("a queue name cannot hold a NUL character")
        return self._execute(self._sql.pause_queue, {"queue": queue}).rowcount == 1

    def resume_queue(self, queue: str) -> bool:
        """Let `queue` lease again; True if it was paused."""
        if "\x00" in queue:
            return False
        return self._execute(self._sql.resume_queue, {"queue": queue}).rowcount == 1

    def paused_queues(self) -> list[str]:
        """The paused queues' names, sorted."""
        with self.transaction():
            assert self._conn is not None
            return [row[0] for row in self._conn.execute(self._sql.paused_queues)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{queue: {state: count}}``: the kept totals plus the deltas not folded yet
        (migration 016), never the jobs."""
        return self._count_rows(self._sql.counts)

    def _scan_counts(self) -> dict[str, dict[str, int]]:
        """`counts` read from every job (a full scan: the tests' truth, never the node's)."""
        return self._count_rows(self._sql.counts_scan)

    def _count_rows(self, statement: str) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        with self.transaction():
            assert self._conn is not None
            for queue, state, n in self._conn.execute(statement):
                result.setdefault(queue, {})[state] = int(n)
        return result

    def queue_stats(self, window: float = 60.0) -> dict[str, QueueStats]:
        """What each queue did over the last `window` seconds by the server's clock (see
        `Journal.queue_stats`)."""
        stats_slots(0.0, window)  # the range check
        rows = self._execute(self._sql.queue_stats, {"window": float(window)}).fetchall()
        return {q: QueueStats(float(at), int(f), int(failed), int(leased), float(w), float(m))
                for q, f, failed, leased, w, m, at in rows}

    def get(self, job_id: str) -> JobInfo | None:
        """Return the job with its errors, oldest first, or None."""
        if "\x00" in job_id:
            return None
        with self.transaction():
            assert self._conn is not None
            row = self._conn.execute(self._sql.get, {"id": job_id}).fetchone()
            if row is None:
                return None
            errors = [e for (e,) in self._conn.execute(self._sql.errors, {"id": job_id})]
        return JobInfo(row[0], row[1], row[2], JobState(row[3]), *row[4:], errors)

    def result(self, job_id: str) -> JobResult | None:
        """Read the job's state and outcome; an expired result reads as expired (see `Journal.result`)."""
        if "\x00" in job_id:
            return None
        with self.transaction():
            assert self._conn is not None
            row = self._conn.execute(self._sql.result, {"id": job_id}).fetchone()
        if row is None:
            return None
        return JobResult.from_row(row)

    def expire_results(self, limit: int) -> int:
        """Remove up to `limit` results whose time has passed; returns how many."""
        if limit <= 0:
            return 0
        return self._execute(self._sql.expire_results, {"limit": limit}).rowcount

    def prune(self, older_than: Mapping[JobState, float], limit: int) -> int:
        """Delete up to `limit` finished jobs past their state's age by the database's clock, with
        their errors (see `Journal.prune`); rows another transaction holds are skipped.

        Raises:
            ValueError: a state that is not final, an age or limit out of range.
        """
        pairs = check_prune(older_than, limit)
        if limit == 0 or not pairs:
            return 0
        removed = 0
        with self.transaction():
            for state, age in pairs:
                row = self._execute(self._sql.prune, {"state": state.value, "age": age,
                                                      "limit": limit - removed}).fetchone()
                removed += row[0]  # type: ignore[index]
                if removed >= limit:
                    break
        return removed

    # -- the operator's reads and clears (actorq jobs / queues) --------------------------------
    def list_jobs(self, *, state: JobState | None = None, queue: str | None = None, task: str | None = None,
                  after: str | None = None, limit: int = 50) -> list[JobSummary]:
        """Up to `limit` jobs after the cursor `after`, in id order (see `Journal.list_jobs`)."""
        wanted = check_listing(state, limit)
        if any(text is not None and "\x00" in text for text in (queue, task)):
            return []  # text cannot hold it: no job has it
        params: dict[str, Any] = {"after": (after or "").replace("\x00", ""), "task": task, "limit": limit}
        with self.transaction():
            conn = self._conn
            assert conn is not None
            if wanted is None and queue is None:
                return [JobSummary.from_row(row) for row in conn.execute(self._sql.list_all, params)]
            states = [wanted] if wanted is not None else list(JobState)
            pages = [[JobSummary.from_row(row) for row in conn.execute(statement, {**params, "queue": name})]
                     for statement, name in listing_reads(self._sql, states, queue,
                                                          lambda query: [n for (n,) in conn.execute(query)])]
        return merge_pages(pages, limit)

    def inspect(self, job_id: str) -> JobDetail | None:
        """Everything kept of one job, with its attempts' errors; None if unknown."""
        if "\x00" in job_id:
            return None
        with self.transaction():
            assert self._conn is not None
            row = self._conn.execute(self._sql.inspect, {"id": job_id}).fetchone()
            if row is None:
                return None
            errors = [ErrorRecord(*e) for e in self._conn.execute(self._sql.inspect_errors, {"id": job_id})]
        return JobDetail(row[0], row[1], row[2], JobState(row[3]), bytes(row[4]), *row[5:19],
                         None if row[19] is None else bytes(row[19]), row[20], errors)

    def oldest_ready(self) -> dict[str, float]:
        """``{queue: created_at}`` of each queue's earliest ready job."""
        with self.transaction():
            assert self._conn is not None
            return {name: at for name, at in self._conn.execute(self._sql.oldest_ready)}

    def clear_queue(self, queue: str, states: Sequence[JobState], limit: int) -> int:
        """Delete up to `limit` waiting jobs of `queue` in `states`, with their errors; rows another
        transaction holds are skipped (see `Journal.clear_queue`)."""
        wanted = check_clear(states, limit)
        if "\x00" in queue:
            return 0
        removed = 0
        with self.transaction():
            for state in wanted:
                if removed >= limit:
                    break
                row = self._execute(for_state(self._sql.clear_queue, state),
                                    {"queue": queue, "limit": limit - removed}).fetchone()
                removed += row[0]  # type: ignore[index]
        return removed

    @property
    def outage(self) -> str | None:
        """While connecting keeps failing (an outage under way): what is unreachable; else None.

        Safe to read from any thread: a status line reads it while the journal's own
        thread is busy retrying.
        """
        return f"PostgreSQL at {self._connector.where} is unreachable" if self._connector.outage else None

    def maintain(self) -> str | None:
        """Fold the count deltas into the totals and each past slot's rows into one, and drop the
        slots older than `STATS_KEEP` (``actorq_fold_figures``, migration 016), in one transaction
        under a try-lock: one node folds, the others go on. The server vacuums and checkpoints by
        itself. Returns None.
        """
        if self._depth:
            raise JournalError(f"journal {self.url}: maintain() inside a transaction")
        self._execute(self._sql.fold_figures, {})
        return None

    def holders(self, keys: Sequence[str]) -> dict[str, str]:
        """``{unique key: id of the job holding it}`` for those of `keys` that are held (see `Journal.holders`)."""
        if not keys:
            return {}
        rows = self._execute(self._sql.holders, {"keys": list(keys)}).fetchall()
        return {key: job_id for key, job_id, _live in rows}

    def try_lead(self, name: str, holder: str, ttl: float) -> bool:
        """Hold leadership `name` for `ttl` s by the database's clock, if free, expired or already ours."""
        return self._execute(self._sql.lead, {"name": name, "holder": holder, "ttl": ttl}).fetchone() is not None

    def resign(self, name: str, holder: str) -> bool:
        """Give up `name` if `holder` has it, so another node may take it at once."""
        return self._execute(self._sql.resign, {"name": name, "holder": holder}).rowcount == 1

    def close(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def channel_of(schema: str, purpose: str) -> str:
    """The journal's NOTIFY channel for `purpose` in `schema`: ``"done"`` (the ids of jobs that
    reached a final state, a JSON array per transaction and 200 jobs, or ``""`` for "too many to
    name") or ``"cancel"`` (one cancelled job's id).

    Raises:
        ValueError: `schema` is not a valid schema name, or `purpose` is neither.
    """
    if purpose not in ("done", "cancel"):
        raise ValueError(f"no channel for {purpose!r}: expected 'done' or 'cancel'")
    return side_channel(check_schema(schema), purpose)


def enqueue_in(conn: psycopg.Connection[Any], jobs: Sequence[NewJob], schema: str = DEFAULT_SCHEMA) -> int:
    """Insert `jobs` inside the caller's own open transaction on `conn` (transactional enqueue).

    The jobs exist only if that transaction commits; after a rollback they never
    existed, and no worker saw them. The wake-up NOTIFY is delivered at commit too.
    Nothing is committed here. On an autocommit connection outside a transaction
    block the insert commits at once, as any statement would.

    Args:
        conn: the caller's psycopg 3 connection to the journal's database.
        jobs: the jobs; ids already present are skipped (idempotent re-send).
        schema: the journal's schema (already migrated).

    Returns:
        The number of jobs inserted.

    Raises:
        ValueError: `schema` is not a valid schema name.
        psycopg.Error: as any statement of the caller's transaction would (the caller
            rolls back).
    """
    if not jobs:
        return 0
    schema_sql = statements(schema)
    return _enqueue_locked(conn.execute, schema_sql, jobs)


def _enqueue_locked(execute: Callable[[str, dict[str, Any]], Any], schema_sql: Statements,
                    jobs: Sequence[NewJob]) -> int:
    """Insert `jobs` inside an open transaction, after the locks their keys need; returns the count.

    Unique keys are inserted in one order (the sort is stable: of two jobs with one key, the
    first still wins). Each key's lock is taken first, in a statement of its own, so the
    insert's snapshot sees every earlier inserter of the key committed: `lock_keys`. Flow keys'
    locks come next (`lock_flow`, one order for every enqueuer): the insert then sees every
    end of a job of those keys committed, and fills their free slots itself, in id order
    (`_limits.key_ordinals`; `admit` runs after it only when it skipped a row). Jobs discarded
    over their key's limit go one statement each, after the rest: each one's count sees the
    jobs admitted before it.
    """
    keys = sorted({j.unique_key for j in jobs if j.unique_key is not None})
    if keys:
        execute(schema_sql.lock_keys, {"keys": keys})
        jobs = sorted(jobs, key=lambda j: (j.unique_key is None, j.unique_key or ""))
    flow_keys = sorted({j.flow_key for j in jobs if j.flow_key is not None})
    if not flow_keys:
        return execute(schema_sql.enqueue, _enqueue_params(jobs, schema_sql.channel)).fetchone()[0]  # type: ignore[no-any-return]
    sort = execute(schema_sql.lock_flow, {"keys": flow_keys}).fetchone()[0]  # and sorts off
    alone = [j for j in jobs if j.discard_over_limit]
    rest = sorted((j for j in jobs if not j.discard_over_limit), key=lambda j: j.id)  # admitted in id order
    count = 0
    if rest and not alone:  # the common case: the insert puts enable_sort back itself
        count = execute(schema_sql.enqueue_restore, {**_enqueue_params(rest, schema_sql.channel), "sort": sort}).fetchone()[0]
    elif rest:
        count = execute(schema_sql.enqueue, _enqueue_params(rest, schema_sql.channel)).fetchone()[0]
    again = _limits.key_ordinals(rest)[1]
    if again and count < len(rest):  # a row skipped: an ordinal may count a job that is not there
        execute(schema_sql.admit, {"keys": again})
    for job in alone:
        added = execute(schema_sql.enqueue, _enqueue_params([job], schema_sql.channel)).fetchone()[0]
        if added:
            execute(schema_sql.admit, {"keys": [job.flow_key]})
        count += added
    if alone:
        execute(schema_sql.sort_restore, {"sort": sort})
    return count  # type: ignore[no-any-return]


# -- LISTEN/NOTIFY -----------------------------------------------------------------------------


class Listener:
    """Calls `callback` when jobs become ready in a journal schema, from LISTEN/NOTIFY.

    A thread of its own holds one connection that listens on the schema's channel.
    `callback(queue)` runs on that thread once per notification (keep it short and
    non-blocking, e.g. ``loop.call_soon_threadsafe``); an exception it raises is
    logged and ignored. After each (re)connect, `callback(None)` runs once:
    notifications may have been missed meanwhile, so every queue may have work.
    When the connection is lost, the listener reconnects with exponential backoff
    (up to `max_backoff` s) and logs once per outage; `reconnects` counts the
    times it came back. Notifications are a wake-up only: polling stays the
    correctness path.

    Args:
        url: the journal's ``postgresql://`` URL.
        callback: called with a queue name, or None after a (re)connect.
        schema: the journal's schema.
        max_backoff: the longest wait between connection attempts.
        poll_interval: how often the thread checks for `stop` while idle.
        application_name: how the session shows in ``pg_stat_activity`` (default ``actorq listener``).
        channels: more channels to listen on, on the same connection, each with its own
            callback, called like `callback` with the payload, or None after a (re)connect
            (`channel_of` names the journal's: ``done``, ``cancel``). The callback None
            listens only to these.
    """

    def __init__(self, url: str, callback: Callable[[str | None], None] | None, *, schema: str = DEFAULT_SCHEMA,
                 max_backoff: float = DEFAULT_MAX_BACKOFF, poll_interval: float = 0.2,
                 application_name: str | None = None,
                 channels: Mapping[str, Callable[[str | None], None]] | None = None) -> None:
        self.schema = check_schema(schema)
        self._callbacks: dict[str, Callable[[str | None], None]] = dict(channels or {})
        if callback is not None:
            self._callbacks[self.schema] = callback
        named = {"application_name": application_name[:63]} if application_name else {}
        self._connector = Connector(url, retry_for=0.0, max_backoff=max_backoff, purpose="listener",
                                    **_KEEPALIVES, **named)
        self._max_backoff = max_backoff
        self._poll = poll_interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the LISTEN is in place (a test signal)."""
        self.backend_pid: int | None = None
        """The server process of the listening connection while connected (for operators and tests)."""
        self.reconnects = 0
        self.notifications = 0

    def start(self) -> None:
        """Start the listening thread. Idempotent; returns at once (the thread connects)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"actorq-listener-{self.schema}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection; returns once the thread has ended. Idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _notify(self, channel: str, payload: str | None) -> None:
        callback = self._callbacks.get(channel)
        if callback is None:
            return
        try:
            callback(payload)
        except Exception:
            logger.exception("listener callback failed on channel %r for %r", channel, payload)

    def _run(self) -> None:
        delay = 0.05
        ever_connected = False
        listen = sql.SQL("; ").join(sql.SQL("LISTEN {}").format(sql.Identifier(name)) for name in self._callbacks)
        while not self._stopping.is_set():
            try:
                conn = self._connector.connect()
            except JournalError:
                self._stopping.wait(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            try:
                with conn:
                    conn.execute(listen)
                    if ever_connected:
                        self.reconnects += 1  # the connector logged "reachable again"
                    ever_connected = True
                    delay = 0.05
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    for name in self._callbacks:
                        self._notify(name, None)
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=self._poll):
                            self.notifications += 1
                            self._notify(notify.channel, notify.payload)
            except psycopg.Error as exc:
                if not self._connector.outage:
                    self._connector.outage = True
                    logger.warning("listener on schema %r at %s lost its connection: %s; reconnecting",
                                   self.schema, self._connector.where, self._connector.scrub(str(exc).strip()))
            finally:
                self.connected.clear()
                self.backend_pid = None
