-- actorq PostgreSQL journal, migration 012: jobs by state and queue, for the operator's listings.
-- (Migrations 010 and 011 belong to other features: their files may be empty here.)
-- `counts` reads this index (an index-only scan once vacuumed), and `list_jobs` reads one
-- state's jobs of one queue in id order, from any cursor, as a range of it.
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue, id);
