-- actorq SQLite journal, schema version 11: jobs by state and queue, for the operator's listings.
-- (Versions 9 and 10 belong to other features: their files may be empty here.)
-- The table is WITHOUT ROWID, so each entry also holds the id: `list_jobs` reads one state's
-- jobs of one queue in id order, from any cursor, as a range of it, and `counts` reads this
-- index alone (less than half the table's pages, see bench/bench_listing.py).
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue);
