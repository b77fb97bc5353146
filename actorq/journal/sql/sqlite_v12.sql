-- actorq SQLite journal, schema version 12: rate limits (a token bucket per queue).
-- rate as declared ('100/m'), its tokens per second, the most the bucket holds, and the
-- tokens it held at tokens_at (the journal's clock). A lease refills them by the time
-- passed, takes at most their whole part and writes back what it left.
ALTER TABLE actorq_queues ADD COLUMN rate TEXT;
ALTER TABLE actorq_queues ADD COLUMN per_second REAL CHECK (per_second IS NULL OR per_second > 0);
ALTER TABLE actorq_queues ADD COLUMN burst INTEGER CHECK (burst IS NULL OR burst >= 1);
ALTER TABLE actorq_queues ADD COLUMN tokens REAL;
ALTER TABLE actorq_queues ADD COLUMN tokens_at REAL;
