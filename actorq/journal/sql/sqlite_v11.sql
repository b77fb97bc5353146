-- actorq SQLite journal, schema version 11: flow keys (ordering keys, concurrency keys).
-- A job with a key (flow_key: 'o:' || ordering key, or 'c:' || concurrency key) is inserted
-- blocked and admitted, in id order, while its key has fewer than flow_limit admitted jobs
-- (scheduled, ready, leased or retry; an ordering key's limit is 1), in the transaction that
-- inserts it or ends the job before it: the claim never reads a blocked job, and jobs
-- without a key pay only the triggers' WHEN tests.
--
-- SQLite cannot widen a CHECK in place: the table is rebuilt with 'blocked' among its states.
CREATE TABLE actorq_jobs_v11 (
    id             TEXT PRIMARY KEY NOT NULL,   -- client-made, time-ordered
    queue          TEXT NOT NULL,
    task           TEXT NOT NULL,
    payload        BLOB NOT NULL,               -- msgpack [args, kwargs]
    state          TEXT NOT NULL CHECK (state IN
                   ('blocked', 'scheduled', 'ready', 'leased', 'retry', 'succeeded', 'failed', 'dead', 'cancelled')),
    priority       INTEGER NOT NULL DEFAULT 0,
    run_at         REAL NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_id       INTEGER,
    lease_owner    TEXT,
    lease_expires  REAL,
    created_at     REAL NOT NULL,
    finished_at    REAL,
    last_error     TEXT,
    unique_key     TEXT,
    result         BLOB,
    result_expires REAL,
    last_traceback TEXT,
    timeout        REAL CHECK (timeout IS NULL OR timeout > 0),
    unique_until   REAL,
    flow_key       TEXT,
    flow_limit     INTEGER CHECK (flow_limit IS NULL OR (flow_limit >= 1 AND flow_key IS NOT NULL)),
    CHECK (attempts >= 0 AND attempts <= max_attempts),
    CHECK (state <> 'blocked' OR flow_key IS NOT NULL)
) WITHOUT ROWID;
INSERT INTO actorq_jobs_v11 (id, queue, task, payload, state, priority, run_at, attempts, max_attempts, lease_id,
    lease_owner, lease_expires, created_at, finished_at, last_error, unique_key, result, result_expires,
    last_traceback, timeout, unique_until)
SELECT id, queue, task, payload, state, priority, run_at, attempts, max_attempts, lease_id,
    lease_owner, lease_expires, created_at, finished_at, last_error, unique_key, result, result_expires,
    last_traceback, timeout, unique_until FROM actorq_jobs;
DROP TABLE actorq_jobs;
ALTER TABLE actorq_jobs_v11 RENAME TO actorq_jobs;
CREATE INDEX actorq_jobs_ready  ON actorq_jobs (queue, priority, id) WHERE state = 'ready';
CREATE INDEX actorq_jobs_due    ON actorq_jobs (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX actorq_jobs_leased ON actorq_jobs (lease_owner, lease_expires) WHERE state = 'leased';
-- a blocked job holds its unique key as every live job does
CREATE UNIQUE INDEX actorq_jobs_unique ON actorq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('blocked', 'scheduled', 'ready', 'leased', 'retry');
CREATE INDEX actorq_jobs_result_expires ON actorq_jobs (result_expires) WHERE result IS NOT NULL;
CREATE INDEX actorq_jobs_unique_until ON actorq_jobs (unique_key, unique_until) WHERE unique_until IS NOT NULL;
CREATE INDEX actorq_jobs_finished ON actorq_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- waiting jobs by queue for max_depth (ready ones: actorq_jobs_ready); blocked ones wait too
CREATE INDEX actorq_jobs_waiting ON actorq_jobs (queue) WHERE state IN ('blocked', 'scheduled', 'retry');
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue)
    WHERE state = 'blocked' OR state = 'scheduled' OR state = 'retry' OR state = 'failed' OR state = 'dead'
       OR state = 'cancelled';
-- Keyed rows: a key's admitted jobs are counted, and its blocked ones taken in id order, here.
-- Only `flow_key IS NOT NULL` in the predicate: SQLite uses a partial index for a query whose
-- own terms imply each of its terms, and `flow_key = ?` implies that one (a state list would
-- not be implied by `state = 'blocked'`). A key's finished rows stay in it until pruned.
CREATE INDEX actorq_jobs_flow ON actorq_jobs (flow_key, state, id) WHERE flow_key IS NOT NULL;

-- Each statement that ends an admitted job (succeeded, failed, dead, cancelled; a retry,
-- release or reclaim to ready keeps its slot), deletes one (a queue cleared) or puts a
-- finished one back blocked (a retry by hand) names its key to actorq_flow_freed, a function
-- each connection of the journal registers; the journal admits those keys' next jobs before
-- the transaction commits (SQLiteJournal._admit_freed). The admission itself is not written
-- in these triggers: an UPDATE inside a trigger of this table costs ~10x one issued alone.
CREATE TRIGGER actorq_flow_ended AFTER UPDATE OF state ON actorq_jobs
    WHEN NEW.flow_key IS NOT NULL AND OLD.state IN ('scheduled', 'ready', 'leased', 'retry')
     AND NEW.state IN ('succeeded', 'failed', 'dead', 'cancelled')
BEGIN
    SELECT actorq_flow_freed(NEW.flow_key);
END;
CREATE TRIGGER actorq_flow_deleted AFTER DELETE ON actorq_jobs
    WHEN OLD.flow_key IS NOT NULL AND OLD.state IN ('scheduled', 'ready', 'leased', 'retry')
BEGIN
    SELECT actorq_flow_freed(OLD.flow_key);
END;
CREATE TRIGGER actorq_flow_reblocked AFTER UPDATE OF state ON actorq_jobs
    WHEN NEW.state = 'blocked' AND OLD.state <> 'blocked'
BEGIN
    SELECT actorq_flow_freed(NEW.flow_key);
END;

-- A task's declared limit and rule for its jobs with a concurrency key (NULL: 1, and they wait).
ALTER TABLE actorq_tasks ADD COLUMN concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1);
ALTER TABLE actorq_tasks ADD COLUMN on_conflict TEXT CHECK (on_conflict IS NULL OR on_conflict IN ('block', 'discard'));
