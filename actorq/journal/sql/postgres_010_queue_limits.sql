-- actorq PostgreSQL journal, migration 010: queue limits (concurrency, max_depth).
-- A queue's limits as the last node to start declared them ([queues.NAME] in topology.toml).
-- The claimers (and, with max_depth, the enqueuers) of a listed queue lock its row FOR
-- UPDATE, then count in a following statement, which sees every committed lease.
CREATE TABLE actorq_queues (
    queue       text COLLATE "C" PRIMARY KEY,
    concurrency integer CHECK (concurrency IS NULL OR concurrency >= 1),
    max_depth   integer CHECK (max_depth IS NULL OR max_depth >= 1),
    declared_at timestamptz NOT NULL DEFAULT now()
);
-- Scheduled and retrying jobs by queue, for the max_depth count (ready ones: on actorq_jobs_ready).
CREATE INDEX actorq_jobs_waiting ON actorq_jobs (queue) WHERE state IN ('scheduled', 'retry');
