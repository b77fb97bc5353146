-- actorq SQLite journal, schema version 9: queue limits (concurrency, max_depth).
-- A queue's limits as the last node to start declared them ([queues.NAME] in topology.toml):
-- every lease and enqueue of a listed queue reads its row in the write transaction.
CREATE TABLE actorq_queues (
    queue       TEXT PRIMARY KEY NOT NULL,
    concurrency INTEGER CHECK (concurrency IS NULL OR concurrency >= 1),   -- leased at once, all nodes
    max_depth   INTEGER CHECK (max_depth IS NULL OR max_depth >= 1),       -- waiting jobs at most
    declared_at REAL NOT NULL
) WITHOUT ROWID;
-- Scheduled and retrying jobs by queue: a max_depth check counts them without a scan of
-- every due job. Ready jobs are counted on actorq_jobs_ready: a ready insert pays nothing here.
CREATE INDEX actorq_jobs_waiting ON actorq_jobs (queue) WHERE state IN ('scheduled', 'retry');
