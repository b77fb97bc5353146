-- actorq PostgreSQL journal, migration 016: queue figures kept as jobs move (counts, rates, waits).
--
-- How many jobs each (queue, state) has, and what each queue did in each 10-second slot (slot:
-- the Unix time / 10, whole): jobs that reached a final state, leases and the seconds the leased
-- jobs waited from due (run_at) to the lease. Statement-level triggers on actorq_jobs, in the
-- transaction of each statement that inserts, updates or deletes jobs, whatever the statement,
-- append ONE row per (queue, state) the statement changed to actorq_figure_deltas, with its net
-- change: writers only insert, so nodes never wait for each other on a hot row, and no two
-- transactions lock rows of these tables in different orders (a per-row UPSERT of one total per
-- (queue, state) would do both). A positive change of a final state is that many jobs finished
-- now (the row's slot); a positive change of 'leased' is that many leases (a statement that
-- leases moves ready jobs to leased and nothing else; a renewal changes no count and appends
-- nothing), with their waits. Every other row has slot 0.
--
-- `maintain` (actorq_fold_figures, under a try-lock: one node at a time) moves the deltas into
-- the totals (actorq_counts) and the per-slot figures (actorq_queue_slots), and drops the slots
-- older than an hour; the readers sum totals and the deltas not folded yet in one statement.
--
-- Privileges: the triggers and the fold run as the role that migrated (SECURITY DEFINER, the
-- search path fixed), so a role that writes jobs needs nothing more than before; a role that
-- reads the counts or the figures (`actorq status`, `queues list`, metrics) needs SELECT on
-- actorq_counts, actorq_figure_deltas and actorq_queue_slots.
CREATE TABLE actorq_counts (
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
INSERT INTO actorq_counts (queue, state, n) SELECT queue, state, count(*) FROM actorq_jobs GROUP BY queue, state;
CREATE TABLE actorq_figure_deltas (
    queue    text COLLATE "C" NOT NULL,
    state    text NOT NULL,
    slot     bigint NOT NULL,
    n        bigint NOT NULL,
    wait_sum float8,   -- leases: their waits, summed and the longest
    wait_max float8
);
CREATE TABLE actorq_queue_slots (
    queue    text COLLATE "C" NOT NULL,
    slot     bigint NOT NULL,
    finished bigint NOT NULL,
    failed   bigint NOT NULL,   -- of the finished: failed or dead
    leased   bigint NOT NULL,
    wait_sum float8 NOT NULL,
    wait_max float8 NOT NULL,
    PRIMARY KEY (queue, slot)
);

-- Transition tables need a trigger per event (and no column list). One INSERT each: the cost
-- of a trigger is mostly its statements (a second or third INSERT in the UPDATE trigger's
-- body cost as much again).
CREATE FUNCTION actorq_figures_inserted() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO actorq_figure_deltas (queue, state, slot, n)
    SELECT queue, state, 0, count(*) FROM new_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

CREATE FUNCTION actorq_figures_deleted() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO actorq_figure_deltas (queue, state, slot, n)
    SELECT queue, state, 0, -count(*) FROM old_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

CREATE FUNCTION actorq_figures_updated() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO actorq_figure_deltas (queue, state, slot, n, wait_sum, wait_max)
    SELECT queue, state,
           CASE WHEN sum(n) > 0 AND state IN ('leased', 'succeeded', 'failed', 'dead', 'cancelled')
                THEN floor(extract(epoch FROM now()) / 10)::bigint ELSE 0 END,
           sum(n), sum(wait), max(wait)
    FROM (SELECT queue, state, 1 AS n,
                 CASE WHEN state = 'leased' THEN greatest(0, extract(epoch FROM now() - run_at))::float8 END AS wait
          FROM new_jobs
          UNION ALL SELECT queue, state, -1, NULL FROM old_jobs) m
    GROUP BY queue, state HAVING sum(n) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER actorq_figures_inserted AFTER INSERT ON actorq_jobs
    REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_figures_inserted();
CREATE TRIGGER actorq_figures_updated AFTER UPDATE ON actorq_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_figures_updated();
CREATE TRIGGER actorq_figures_deleted AFTER DELETE ON actorq_jobs
    REFERENCING OLD TABLE AS old_jobs FOR EACH STATEMENT EXECUTE FUNCTION actorq_figures_deleted();

-- Fold: the deltas into the totals and the slots (in key order), the slots older than an hour
-- dropped. One folder at a time (a try-lock; the others go on): only it writes those two
-- tables, so no two transactions lock their rows in different orders. A delta committed after
-- its snapshot stays for the next fold.
CREATE FUNCTION actorq_fold_figures() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('actorq.figures'), hashtext(current_schema())) THEN
        RETURN;
    END IF;
    WITH moved AS (DELETE FROM actorq_figure_deltas RETURNING queue, state, slot, n, wait_sum, wait_max),
    counted AS (
        INSERT INTO actorq_counts AS c (queue, state, n)
        SELECT queue, state, sum(n) FROM moved GROUP BY queue, state ORDER BY queue, state
        ON CONFLICT (queue, state) DO UPDATE SET n = c.n + excluded.n)
    INSERT INTO actorq_queue_slots AS s (queue, slot, finished, failed, leased, wait_sum, wait_max)
    SELECT queue, slot, coalesce(sum(n) FILTER (WHERE state <> 'leased'), 0),
           coalesce(sum(n) FILTER (WHERE state IN ('failed', 'dead')), 0),
           coalesce(sum(n) FILTER (WHERE state = 'leased'), 0), coalesce(sum(wait_sum), 0), coalesce(max(wait_max), 0)
    FROM moved WHERE slot > 0 GROUP BY queue, slot ORDER BY queue, slot
    ON CONFLICT (queue, slot) DO UPDATE SET finished = s.finished + excluded.finished,
        failed = s.failed + excluded.failed, leased = s.leased + excluded.leased,
        wait_sum = s.wait_sum + excluded.wait_sum, wait_max = greatest(s.wait_max, excluded.wait_max);
    DELETE FROM actorq_queue_slots WHERE slot < floor((extract(epoch FROM now()) - 3600) / 10);
END $$;
