-- actorq SQLite journal, schema version 13: queue figures kept as jobs move (counts, rates, waits).
-- actorq_counts holds how many jobs each (queue, state) has. Triggers on actorq_jobs keep it,
-- in the transaction of the statement that inserts, moves or deletes a job, whatever the
-- statement: `counts()` reads these few rows instead of every job. A row falls to 0 and stays.
CREATE TABLE actorq_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO actorq_counts (queue, state, n) SELECT queue, state, count(*) FROM actorq_jobs GROUP BY queue, state;

-- What each queue did in each 10-second slot (slot: the Unix time / 10, whole): jobs that
-- reached a final state (written by the trigger below, at the row's finished_at), jobs leased
-- and the seconds they waited from due (run_at) to the lease, their sum and largest (written
-- by the lease, one row a queue and lease). `maintain` drops the slots older than an hour.
CREATE TABLE actorq_queue_slots (
    queue    TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0,
    failed   INTEGER NOT NULL DEFAULT 0,   -- of the finished: failed or dead
    leased   INTEGER NOT NULL DEFAULT 0,
    wait_sum REAL NOT NULL DEFAULT 0,
    wait_max REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, slot)
) WITHOUT ROWID;

CREATE TRIGGER actorq_counts_inserted AFTER INSERT ON actorq_jobs
BEGIN
    INSERT INTO actorq_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER actorq_counts_deleted AFTER DELETE ON actorq_jobs
BEGIN
    UPDATE actorq_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;
-- a job's queue never changes: only its state moves it between rows
CREATE TRIGGER actorq_counts_moved AFTER UPDATE OF state ON actorq_jobs WHEN NEW.state <> OLD.state
BEGIN
    UPDATE actorq_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO actorq_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER actorq_slots_finished AFTER UPDATE OF state ON actorq_jobs
    WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
BEGIN
    INSERT INTO actorq_queue_slots (queue, slot, finished, failed)
        VALUES (NEW.queue, CAST(NEW.finished_at / 10 AS INTEGER), 1, (NEW.state = 'failed' OR NEW.state = 'dead'))
        ON CONFLICT (queue, slot) DO UPDATE SET finished = finished + 1, failed = failed + excluded.failed;
END;
