-- actorq SQLite journal, schema version 14: queue figures kept as jobs move (counts, rates, waits).
-- actorq_counts holds how many jobs each (queue, state) has, kept by the triggers below in the
-- transaction of each statement that inserts, moves or deletes a job, whatever the statement:
-- `counts()` reads these rows instead of every job.
--
-- Two economies keep the triggers off most of a job's path (each row a trigger writes cost
-- ~1 us; docs/architecture.md):
-- * ready and leased jobs are one row, under 'ready': a lease (ready -> leased) and a job given
--   back (leased -> ready) write nothing. `counts()` takes the leased ones apart by reading the
--   leased jobs' own index (at most the jobs in flight) in the same statement.
-- * a job reaching a final state is added to the row of its state and its 10-second slot
--   (slot: finished_at / 10, whole; every other row has slot 0), so the one write that counts
--   it also says when it finished: `queue_stats` sums the recent slots. `maintain` folds the
--   slots older than an hour into slot 0.
CREATE TABLE actorq_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    slot  INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state, slot)
) WITHOUT ROWID;
INSERT INTO actorq_counts (queue, state, slot, n)
    SELECT queue, CASE WHEN state = 'leased' THEN 'ready' ELSE state END, 0, count(*) FROM actorq_jobs
    GROUP BY 1, 2;

-- Each queue's leases in each 10-second slot and the seconds their jobs waited from due
-- (run_at) to the lease, summed and the longest: written by the lease itself, one row a queue
-- and lease (SQLiteJournal._lease_slots). `maintain` drops the slots older than an hour.
CREATE TABLE actorq_queue_slots (
    queue    TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    leased   INTEGER NOT NULL,
    wait_sum REAL NOT NULL,
    wait_max REAL NOT NULL,
    PRIMARY KEY (queue, slot)
) WITHOUT ROWID;

-- The WHEN tests use = and OR, never IN (...): a list there built an ephemeral table for
-- each row, which doubled the triggers' cost.
CREATE TRIGGER actorq_counts_inserted AFTER INSERT ON actorq_jobs
BEGIN
    INSERT INTO actorq_counts (queue, state, slot, n) VALUES (NEW.queue, NEW.state, 0, 1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER actorq_counts_deleted AFTER DELETE ON actorq_jobs
BEGIN
    INSERT INTO actorq_counts (queue, state, slot, n)
        VALUES (OLD.queue, CASE WHEN OLD.state = 'leased' THEN 'ready' ELSE OLD.state END, 0, -1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = n - 1;
END;
-- a job's queue never changes: only its state moves it between rows. Leaving a final state
-- (a retry by hand) takes 1 from slot 0: the sum over the slots stays right.
CREATE TRIGGER actorq_counts_moved AFTER UPDATE OF state ON actorq_jobs
    WHEN NEW.state <> OLD.state
     AND NOT ((OLD.state = 'ready' OR OLD.state = 'leased') AND (NEW.state = 'ready' OR NEW.state = 'leased'))
BEGIN
    INSERT INTO actorq_counts (queue, state, slot, n)
        VALUES (OLD.queue, CASE WHEN OLD.state = 'leased' THEN 'ready' ELSE OLD.state END, 0, -1),
               (NEW.queue, CASE WHEN NEW.state = 'leased' THEN 'ready' ELSE NEW.state END,
                CASE WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
                     THEN CAST(NEW.finished_at / 10 AS INTEGER) ELSE 0 END, 1)
        ON CONFLICT (queue, state, slot) DO UPDATE SET n = n + excluded.n;
END;
