-- actorq PostgreSQL journal, migration 007: job time limits and paused queues.
-- (Migrations 005 and 006 belong to other features: their files may be empty here.)
-- A job's own time limit in seconds (NULL means its task's declared timeout, if any).
ALTER TABLE actorq_jobs ADD COLUMN timeout double precision CHECK (timeout IS NULL OR timeout > 0);
-- A queue listed here leases nothing, on every node: running jobs finish.
CREATE TABLE actorq_paused_queues (
    queue     text COLLATE "C" PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
