-- actorq SQLite journal, schema version 1.
CREATE TABLE actorq_jobs (
    id            TEXT PRIMARY KEY NOT NULL,   -- client-made, time-ordered
    queue         TEXT NOT NULL,
    task          TEXT NOT NULL,
    payload       BLOB NOT NULL,               -- msgpack [args, kwargs]
    state         TEXT NOT NULL CHECK (state IN
                  ('scheduled', 'ready', 'leased', 'retry', 'succeeded', 'failed', 'dead', 'cancelled')),
    priority      INTEGER NOT NULL DEFAULT 0,
    run_at        REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_id      INTEGER,
    lease_owner   TEXT,
    lease_expires REAL,
    created_at    REAL NOT NULL,
    finished_at   REAL,
    last_error    TEXT,
    CHECK (attempts >= 0 AND attempts <= max_attempts)
) WITHOUT ROWID;  -- the id is the key: one b-tree write per insert, appended in id order

-- Partial indexes keep the hot queries on small trees: only live rows are indexed.
CREATE INDEX actorq_jobs_ready  ON actorq_jobs (queue, priority, id) WHERE state = 'ready';
CREATE INDEX actorq_jobs_due    ON actorq_jobs (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX actorq_jobs_leased ON actorq_jobs (lease_owner, lease_expires) WHERE state = 'leased';

-- One row per failed attempt (exceptions and crashes). Successes write nothing here.
CREATE TABLE actorq_errors (
    job_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at      REAL NOT NULL,
    error   TEXT NOT NULL
);
CREATE INDEX actorq_errors_job ON actorq_errors (job_id);
