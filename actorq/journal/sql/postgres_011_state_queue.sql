-- actorq PostgreSQL journal, migration 011: jobs by state and queue, for the operator's listings.
-- Partial: the states a job reaches off the hot path only, so that ready -> leased ->
-- succeeded never writes it. `list_jobs` reads one such state's jobs of one queue in id
-- order, from any cursor, as a range of it (the statements name the state as a literal).
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue, id)
    WHERE state IN ('scheduled', 'retry', 'failed', 'dead', 'cancelled');
