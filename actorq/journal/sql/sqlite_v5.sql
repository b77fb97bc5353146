-- actorq SQLite journal, schema version 5: results.
-- result: msgpack of a succeeded job's return value (NULL when it returned None, or once
-- it expired and was removed). result_expires: Unix time until which it is kept (NULL
-- nothing kept). An expired result's row keeps result_expires, so a reader can tell
-- "expired" from "returned None". last_traceback: the traceback text of the last attempt
-- that raised, kept beside last_error.
ALTER TABLE actorq_jobs ADD COLUMN result BLOB;
ALTER TABLE actorq_jobs ADD COLUMN result_expires REAL;
ALTER TABLE actorq_jobs ADD COLUMN last_traceback TEXT;
-- only rows still holding a result: the sweep of expired ones reads a small tree
CREATE INDEX actorq_jobs_result_expires ON actorq_jobs (result_expires) WHERE result IS NOT NULL;
