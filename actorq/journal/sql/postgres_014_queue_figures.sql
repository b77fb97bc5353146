-- actorq PostgreSQL journal, migration 014: queue figures kept as jobs move (counts, rates, waits).
--
-- How many jobs each (queue, state) has: actorq_counts (the totals) plus actorq_count_deltas
-- (what statements changed since). Statement-level triggers on actorq_jobs, in the transaction
-- of each statement that inserts, updates or deletes jobs, whatever the statement, append ONE
-- row per (queue, state) the statement changed, with its net change: writers only insert, so
-- nodes never wait for each other on a hot row, and no two transactions lock rows of these
-- tables in different orders (a per-row UPSERT of the totals would do both). The reader sums
-- totals and deltas in one statement (one snapshot); `maintain` folds the deltas into the totals
-- under a try-lock (actorq_fold_figures), so they stay few.
--
-- Privileges: the triggers and the fold run as the role that migrated (SECURITY DEFINER, the
-- search path fixed), so a role that writes jobs needs nothing more than before; a role that
-- reads the counts or the figures (`actorq status`, `queues list`, metrics) needs SELECT on
-- actorq_counts, actorq_count_deltas and actorq_queue_slots.
CREATE TABLE actorq_counts (
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE actorq_count_deltas (
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL,
    n     bigint NOT NULL
);
INSERT INTO actorq_counts (queue, state, n) SELECT queue, state, count(*) FROM actorq_jobs GROUP BY queue, state;

-- What each queue did in each 10-second slot (the Unix time / 10, whole): jobs that reached a
-- final state (the net growth of the final states in a statement), leases and the seconds the
-- leased jobs waited from due (run_at) to the lease (the statement's now()). Appended by the
-- same triggers, a row per queue and statement; `maintain` merges a past slot's rows into one
-- (folded) and drops the slots older than an hour.
CREATE TABLE actorq_queue_slots (
    queue    text COLLATE "C" NOT NULL,
    slot     bigint NOT NULL,
    finished bigint NOT NULL DEFAULT 0,
    failed   bigint NOT NULL DEFAULT 0,   -- of the finished: failed or dead
    leased   bigint NOT NULL DEFAULT 0,
    wait_sum float8 NOT NULL DEFAULT 0,
    wait_max float8 NOT NULL DEFAULT 0,
    folded   boolean NOT NULL DEFAULT false
);
CREATE INDEX actorq_queue_slots_slot ON actorq_queue_slots (slot);

-- Transition tables need a trigger per event (and no column list): three small functions.
-- An UPDATE that moves no job between states (a renewal, an expired result) appends nothing.
CREATE FUNCTION actorq_counts_inserted() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO actorq_count_deltas (queue, state, n) SELECT queue, state, count(*) FROM new_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

CREATE FUNCTION actorq_counts_deleted() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO actorq_count_deltas (queue, state, n) SELECT queue, state, -count(*) FROM old_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

-- A statement either leases (ready -> leased: the leased state of a queue grows, and every row
-- of it now leased is a new lease) or moves jobs otherwise; a renewal updates leased rows and
-- leaves their count as it was, so it adds no lease.
CREATE FUNCTION actorq_counts_updated() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    WITH d AS MATERIALIZED (
        SELECT queue, state, sum(n) AS n FROM (
            SELECT queue, state, 1 AS n FROM new_jobs UNION ALL SELECT queue, state, -1 FROM old_jobs) m
        GROUP BY queue, state HAVING sum(n) <> 0),
    counted AS (INSERT INTO actorq_count_deltas (queue, state, n) SELECT queue, state, n FROM d),
    finished AS (
        INSERT INTO actorq_queue_slots (queue, slot, finished, failed)
        SELECT queue, floor(extract(epoch FROM now()) / 10)::bigint, sum(n),
               coalesce(sum(n) FILTER (WHERE state IN ('failed', 'dead')), 0)
        FROM d WHERE n > 0 AND state IN ('succeeded', 'failed', 'dead', 'cancelled') GROUP BY queue)
    INSERT INTO actorq_queue_slots (queue, slot, leased, wait_sum, wait_max)
    SELECT j.queue, floor(extract(epoch FROM now()) / 10)::bigint, count(*),
           sum(greatest(0, extract(epoch FROM now() - j.run_at))), max(greatest(0, extract(epoch FROM now() - j.run_at)))
    FROM new_jobs j WHERE j.state = 'leased'
     AND j.queue IN (SELECT queue FROM d WHERE state = 'leased' AND n > 0)
    GROUP BY j.queue;
    RETURN NULL;
END $$;

CREATE TRIGGER actorq_counts_inserted AFTER INSERT ON actorq_jobs
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_counts_inserted();
CREATE TRIGGER actorq_counts_updated AFTER UPDATE ON actorq_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_counts_updated();
CREATE TRIGGER actorq_counts_deleted AFTER DELETE ON actorq_jobs
    REFERENCING OLD TABLE AS old_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_counts_deleted();

-- Fold: each delta into its total, each past slot's rows into one, the slots older than an hour
-- dropped. One folder at a time (a try-lock; the others go on): only it writes the totals, so no
-- two transactions lock them in different orders. A delta committed after its snapshot stays
-- for the next fold.
CREATE FUNCTION actorq_fold_figures() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('actorq.figures'), hashtext(current_schema())) THEN
        RETURN;
    END IF;
    WITH moved AS (DELETE FROM actorq_count_deltas RETURNING queue, state, n)
    INSERT INTO actorq_counts AS c (queue, state, n)
    SELECT queue, state, sum(n) FROM moved GROUP BY queue, state ORDER BY queue, state
    ON CONFLICT (queue, state) DO UPDATE SET n = c.n + excluded.n;
    WITH moved AS (DELETE FROM actorq_queue_slots WHERE NOT folded AND slot < floor(extract(epoch FROM now()) / 10)
                   RETURNING queue, slot, finished, failed, leased, wait_sum, wait_max)
    INSERT INTO actorq_queue_slots (queue, slot, finished, failed, leased, wait_sum, wait_max, folded)
    SELECT queue, slot, sum(finished), sum(failed), sum(leased), sum(wait_sum), max(wait_max), true
    FROM moved GROUP BY queue, slot;
    DELETE FROM actorq_queue_slots WHERE slot < floor((extract(epoch FROM now()) - 3600) / 10);
END $$;
