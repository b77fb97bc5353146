-- actorq SQLite journal, schema version 13: rules per flow key (a task's key_rate, key_burst, key_circuit_breaker).
-- What the task declares for each key of its jobs (an ordering or a concurrency key) ...
ALTER TABLE actorq_tasks ADD COLUMN key_rate TEXT;
ALTER TABLE actorq_tasks ADD COLUMN key_burst INTEGER CHECK (key_burst IS NULL OR key_burst >= 1);
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_failures INTEGER CHECK (key_breaker_failures IS NULL OR key_breaker_failures >= 1);
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_window REAL;
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_cool_down REAL;
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_probes INTEGER CHECK (key_breaker_probes IS NULL OR key_breaker_probes >= 1);
-- ... and where each (task, key) stands, written where the key's jobs are admitted (enqueue,
-- the end of the key's previous job, `promote` once due_at has passed) and where its jobs'
-- attempts end (fail counts a failure, complete of a half-open key's job closes it).
-- tokens at tokens_at: the key's bucket (NULL: no rate). state, failed_at, opened_at: its
-- breaker, as actorq_breakers. due_at: when its rules let more of its blocked jobs in (a token,
-- the end of a cool-down); NULL: only a finishing job of the key does. idle_at: from when the
-- row holds nothing a new row would not (bucket full, breaker closed, no failure in the
-- window), or its breaker has stood open untouched for a cool-down and a window: `promote`
-- deletes such rows, a batch at a time.
CREATE TABLE actorq_key_rules (
    task       TEXT NOT NULL,
    flow_key   TEXT NOT NULL,
    tokens     REAL,
    tokens_at  REAL,
    state      TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failed_at  TEXT NOT NULL DEFAULT '[]',
    opened_at  REAL,
    due_at     REAL,
    idle_at    REAL,
    changed_at REAL NOT NULL,
    PRIMARY KEY (task, flow_key)
) WITHOUT ROWID;
CREATE INDEX actorq_key_rules_due ON actorq_key_rules (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX actorq_key_rules_idle ON actorq_key_rules (idle_at) WHERE idle_at IS NOT NULL;
CREATE INDEX actorq_key_rules_not_closed ON actorq_key_rules (state, task, flow_key) WHERE state <> 'closed';
