-- actorq PostgreSQL journal, migration 006: results.
-- result: msgpack of a succeeded job's return value (NULL when it returned None, or once
-- it expired and was removed). result_expires: until when it is kept (NULL nothing kept).
-- An expired result's row keeps result_expires, so a reader can tell "expired" from
-- "returned None". last_traceback: the traceback text of the last attempt that raised.
ALTER TABLE actorq_jobs ADD COLUMN result bytea;
ALTER TABLE actorq_jobs ADD COLUMN result_expires timestamptz;
ALTER TABLE actorq_jobs ADD COLUMN last_traceback text;
-- only rows still holding a result: the sweep of expired ones reads a small tree
CREATE INDEX actorq_jobs_result_expires ON actorq_jobs (result_expires) WHERE result IS NOT NULL;
