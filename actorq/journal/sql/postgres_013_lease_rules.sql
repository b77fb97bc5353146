-- actorq PostgreSQL journal, migration 013: rules in the lease (rate limits per queue, a task's concurrency, rate and circuit breaker).
-- rate as declared ('100/m'), its tokens per second, the most the bucket holds, and the
-- tokens it held at tokens_at (Unix seconds of the database's now()); a lease, under the
-- queue's claim lock, refills them by the time passed, takes at most their whole part and
-- writes back what it left.
ALTER TABLE actorq_queues ADD COLUMN rate text;
ALTER TABLE actorq_queues ADD COLUMN per_second float8 CHECK (per_second IS NULL OR per_second > 0);
ALTER TABLE actorq_queues ADD COLUMN burst integer CHECK (burst IS NULL OR burst >= 1);
ALTER TABLE actorq_queues ADD COLUMN tokens float8;
ALTER TABLE actorq_queues ADD COLUMN tokens_at float8;
-- A task's own rules (@task(concurrency=..., rate=...)), as the last node to start declared
-- them: its jobs leased at once, every node together, and the token bucket of its rate.
ALTER TABLE actorq_tasks ADD COLUMN concurrency integer CHECK (concurrency IS NULL OR concurrency >= 1);
ALTER TABLE actorq_tasks ADD COLUMN rate text;
ALTER TABLE actorq_tasks ADD COLUMN per_second float8 CHECK (per_second IS NULL OR per_second > 0);
ALTER TABLE actorq_tasks ADD COLUMN burst integer CHECK (burst IS NULL OR burst >= 1);
ALTER TABLE actorq_tasks ADD COLUMN tokens float8;
ALTER TABLE actorq_tasks ADD COLUMN tokens_at float8;
-- A task's circuit breaker (@task(circuit_breaker=CircuitBreaker(...))): what it declares ...
ALTER TABLE actorq_tasks ADD COLUMN breaker_failures integer CHECK (breaker_failures IS NULL OR breaker_failures >= 1);
ALTER TABLE actorq_tasks ADD COLUMN breaker_window float8;
ALTER TABLE actorq_tasks ADD COLUMN breaker_cool_down float8;
ALTER TABLE actorq_tasks ADD COLUMN breaker_probes integer CHECK (breaker_probes IS NULL OR breaker_probes >= 1);
-- ... and where it stands, every node's attempts together: closed (failed_at: the times of its
-- failed attempts within the window, a JSON array), open since opened_at (its jobs are not
-- leased), half_open (at most `probes` of its jobs leased). Written, under the row's lock, in
-- the transaction that stores an attempt's end (fail, complete) or that leases the task.
CREATE TABLE actorq_breakers (
    task       text COLLATE "C" PRIMARY KEY,
    state      text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failed_at  text NOT NULL DEFAULT '[]',
    opened_at  float8,
    changed_at float8 NOT NULL
);
