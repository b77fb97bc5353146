-- actorq SQLite journal, schema version 10: ordering keys and concurrency keys.
-- (Version 9 belongs to another feature: its file may be empty here.)
-- Jobs of one ordering key run one at a time, in id order: a job is leased only when no
-- earlier live job of its key exists.
ALTER TABLE actorq_jobs ADD COLUMN ordering_key TEXT;
-- At most concurrency_limit jobs of one concurrency key are leased at once.
ALTER TABLE actorq_jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE actorq_jobs ADD COLUMN concurrency_limit INTEGER
    CHECK (concurrency_limit IS NULL OR (concurrency_limit >= 1 AND concurrency_key IS NOT NULL));
-- Live rows with an ordering key only: the lease asks for an earlier one here. Jobs without
-- keys are in neither index and cost them nothing.
CREATE INDEX actorq_jobs_ordering ON actorq_jobs (ordering_key, id, state)
    WHERE ordering_key IS NOT NULL AND state IN ('scheduled', 'ready', 'leased', 'retry');
-- Leased rows with a concurrency key: the lease counts a key's running jobs here. A row has
-- a lease_id exactly while it is leased, and the lease's count says lease_id IS NOT NULL, which
-- only this index implies, so no planner serves it from another. The second column makes
-- the indexes covering: SQLite reads no table row to check it.
CREATE INDEX actorq_jobs_concurrency_leased ON actorq_jobs (concurrency_key, lease_id)
    WHERE concurrency_key IS NOT NULL AND lease_id IS NOT NULL;
-- Live rows with a concurrency key: a discarding enqueue counts a key's live jobs here.
CREATE INDEX actorq_jobs_concurrency_live ON actorq_jobs (concurrency_key, state)
    WHERE concurrency_key IS NOT NULL AND state IN ('scheduled', 'ready', 'leased', 'retry');
-- A task's declared limit and rule for its jobs with a concurrency key, for producers that
-- read the task catalog (NULL: a limit of 1, and jobs wait).
ALTER TABLE actorq_tasks ADD COLUMN concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1);
ALTER TABLE actorq_tasks ADD COLUMN on_conflict TEXT CHECK (on_conflict IS NULL OR on_conflict IN ('block', 'discard'));
