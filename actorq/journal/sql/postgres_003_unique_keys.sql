-- actorq PostgreSQL journal, migration 003: unique keys (B7).
-- A key is held by at most one live job (scheduled, ready, leased or retry), and once
-- that job is final, the key is free again. Enforced by the index, not by an
-- advisory lock, so concurrent inserts from any number of nodes cannot both win.
ALTER TABLE actorq_jobs ADD COLUMN unique_key text COLLATE "C";
CREATE UNIQUE INDEX actorq_jobs_unique ON actorq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'ready', 'leased', 'retry');
