-- actorq SQLite journal, schema version 8: retention of finished jobs.
-- (Version 7 belongs to another feature: its file may be empty here.)
-- Finished jobs by state and finish time (only they have a finished_at): pruning the oldest
-- of a state is a range scan of this small tree, never a scan of the jobs table.
CREATE INDEX actorq_jobs_finished ON actorq_jobs (state, finished_at) WHERE finished_at IS NOT NULL;
