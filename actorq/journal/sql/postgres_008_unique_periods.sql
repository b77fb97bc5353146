-- actorq PostgreSQL journal, migration 008: unique keys held for a period (unique_for).
-- Until when the row holds its unique_key whatever its state, finished included (its
-- insert time + the job's unique_for, by the database's clock), or NULL: held only while live.
-- A sweep that deletes finished jobs must keep every row whose unique_until is still
-- ahead: deleting it would free the key early.
ALTER TABLE actorq_jobs ADD COLUMN unique_until timestamptz;
-- Rows with a period only: an enqueue looks a key up here beside the live unique index.
CREATE INDEX actorq_jobs_unique_until ON actorq_jobs (unique_key, unique_until) WHERE unique_until IS NOT NULL;
-- A task's declared period, for producers that read the task catalog, or NULL: none.
ALTER TABLE actorq_tasks ADD COLUMN unique_for double precision CHECK (unique_for IS NULL OR unique_for > 0);
