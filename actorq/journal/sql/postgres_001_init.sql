-- actorq PostgreSQL journal, migration 001: the jobs, their errors, lease ids.
-- Applied by actorq.journal.migrate() with search_path set to the journal's schema,
-- inside the transaction that records it in actorq_migrations.

CREATE TABLE actorq_jobs (
    id            text COLLATE "C" PRIMARY KEY,    -- client-made, time-ordered; "C": byte order, as in SQLite
    queue         text COLLATE "C" NOT NULL,
    task          text COLLATE "C" NOT NULL,
    payload       bytea NOT NULL,                  -- msgpack [args, kwargs]
    state         text NOT NULL CHECK (state IN
                  ('scheduled', 'ready', 'leased', 'retry', 'succeeded', 'failed', 'dead', 'cancelled')),
    priority      integer NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL CHECK (max_attempts >= 1),
    lease_id      bigint,
    lease_owner   text COLLATE "C",
    lease_expires timestamptz,                     -- 'infinity' for a lease that never expires
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    last_error    text,
    -- B3: a claim can never count an attempt past max_attempts, whatever the planner does.
    CONSTRAINT actorq_jobs_attempts CHECK (attempts >= 0 AND attempts <= max_attempts)
);

-- Partial indexes keep the hot queries on small trees: only live rows are indexed.
CREATE INDEX actorq_jobs_ready   ON actorq_jobs (queue, priority, id) WHERE state = 'ready';
CREATE INDEX actorq_jobs_due     ON actorq_jobs (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX actorq_jobs_owner   ON actorq_jobs (lease_owner) WHERE state = 'leased';
CREATE INDEX actorq_jobs_expires ON actorq_jobs (lease_expires) WHERE state = 'leased';

-- One row per failed attempt (exceptions and crashes). Successes write nothing here.
CREATE TABLE actorq_errors (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    job_id  text COLLATE "C" NOT NULL,
    attempt integer NOT NULL,
    at      timestamptz NOT NULL,
    error   text NOT NULL
);
CREATE INDEX actorq_errors_job ON actorq_errors (job_id, seq);

-- One number per lease call, shared by the jobs it hands out; never reused, so a
-- stale lease id can never match a newer lease (fencing) on any node.
CREATE SEQUENCE actorq_lease_ids;
