-- actorq SQLite journal, schema version 12: rules in the lease (rate limits per queue, a task's concurrency and rate).
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
