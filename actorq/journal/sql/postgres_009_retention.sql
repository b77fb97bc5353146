-- actorq PostgreSQL journal, migration 009: retention of finished jobs.
-- (Migration 008 belongs to another feature: its file may be empty here.)
-- Finished jobs by state and finish time (only they have a finished_at): pruning the oldest
-- of a state is a range scan of this index, never a scan of the jobs table.
CREATE INDEX actorq_jobs_finished ON actorq_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
