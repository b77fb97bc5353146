-- actorq SQLite journal, schema version 10: jobs by state and queue, for the operator's listings.
-- Partial: the states a job reaches off the hot path only (scheduled, retry, failed, dead,
-- cancelled), so that ready -> leased -> succeeded never writes it. The table is WITHOUT ROWID,
-- so each entry also holds the id: `list_jobs` reads one such state's jobs of one queue in id
-- order, from any cursor, as a range of it. Written as OR terms: SQLite uses a partial index
-- for a query whose own terms include one of them (`state = 'dead'`).
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue)
    WHERE state = 'scheduled' OR state = 'retry' OR state = 'failed' OR state = 'dead' OR state = 'cancelled';
