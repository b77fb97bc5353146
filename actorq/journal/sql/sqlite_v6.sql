-- actorq SQLite journal, schema version 6: job time limits and paused queues.
-- (Versions 4 and 5 belong to other features: their files may be empty here.)
-- A job's own time limit in seconds (NULL means its task's declared timeout, if any).
ALTER TABLE actorq_jobs ADD COLUMN timeout REAL CHECK (timeout IS NULL OR timeout > 0);
-- A queue listed here leases nothing, on every node: running jobs finish.
CREATE TABLE actorq_paused_queues (
    queue     TEXT PRIMARY KEY NOT NULL,
    paused_at REAL NOT NULL                   -- Unix time of the pause
) WITHOUT ROWID;
