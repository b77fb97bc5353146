-- actorq SQLite journal, schema version 12: rules in the lease (rate limits per queue, a task's concurrency, rate and circuit breaker).
-- rate as declared ('100/m'), its tokens per second, the most the bucket holds, and the
-- tokens it held at tokens_at (the journal's clock). A lease refills them by the time
-- passed, takes at most their whole part and writes back what it left.
ALTER TABLE actorq_queues ADD COLUMN rate TEXT;
ALTER TABLE actorq_queues ADD COLUMN per_second REAL CHECK (per_second IS NULL OR per_second > 0);
ALTER TABLE actorq_queues ADD COLUMN burst INTEGER CHECK (burst IS NULL OR burst >= 1);
ALTER TABLE actorq_queues ADD COLUMN tokens REAL;
ALTER TABLE actorq_queues ADD COLUMN tokens_at REAL;
-- A task's own rules (@task(concurrency=..., rate=...)), as the last node to start declared
-- them: its jobs leased at once, every node together, and the token bucket of its rate.
ALTER TABLE actorq_tasks ADD COLUMN concurrency INTEGER CHECK (concurrency IS NULL OR concurrency >= 1);
ALTER TABLE actorq_tasks ADD COLUMN rate TEXT;
ALTER TABLE actorq_tasks ADD COLUMN per_second REAL CHECK (per_second IS NULL OR per_second > 0);
ALTER TABLE actorq_tasks ADD COLUMN burst INTEGER CHECK (burst IS NULL OR burst >= 1);
ALTER TABLE actorq_tasks ADD COLUMN tokens REAL;
ALTER TABLE actorq_tasks ADD COLUMN tokens_at REAL;
-- A task's circuit breaker (@task(circuit_breaker=CircuitBreaker(...))): what it declares ...
ALTER TABLE actorq_tasks ADD COLUMN breaker_failures INTEGER CHECK (breaker_failures IS NULL OR breaker_failures >= 1);
ALTER TABLE actorq_tasks ADD COLUMN breaker_window REAL;
ALTER TABLE actorq_tasks ADD COLUMN breaker_cool_down REAL;
ALTER TABLE actorq_tasks ADD COLUMN breaker_probes INTEGER CHECK (breaker_probes IS NULL OR breaker_probes >= 1);
-- ... and where it stands, every node's attempts together: closed (failed_at: the times of its
-- failed attempts within the window, a JSON array), open since opened_at (its jobs are not
-- leased), half_open (at most `probes` of its jobs leased). Written in the transaction that
-- stores an attempt's end (fail, complete) or that leases the task (open -> half_open).
CREATE TABLE actorq_breakers (
    task       TEXT PRIMARY KEY NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failed_at  TEXT NOT NULL DEFAULT '[]',
    opened_at  REAL,
    changed_at REAL NOT NULL
) WITHOUT ROWID;
