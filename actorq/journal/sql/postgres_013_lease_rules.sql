-- actorq PostgreSQL journal, migration 013: rules in the lease (rate limits per queue, a task's concurrency and rate).
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
