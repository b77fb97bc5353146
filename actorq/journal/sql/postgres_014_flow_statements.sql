-- actorq PostgreSQL journal, migration 014: a statement that ends keyed jobs admits their
-- keys' next jobs once per statement, not once per row.
--
-- Migration 012 ran a row trigger for every admitted keyed job that ended: a plpgsql call, the
-- key's shared lock, and actorq_admit (a second call, whose SET clauses save and restore three
-- settings) even when no job of the key waited. With 10,000 ordering keys that was 14 us a job,
-- most of what keys cost. Now one trigger per statement reads the rows the statement changed
-- (its transition tables), takes the shared locks of the keys it freed, in the order enqueuers
-- take theirs exclusive (so a finisher and an enqueuer of two keys can no longer wait for each
-- other), and calls actorq_admit only for the keys that have a blocked job. A statement that
-- changed no keyed row reads its changed rows once and stops.
--
-- A key's lock is now one of 1,024 per schema (hashtext(key) & 1023), for enqueuers, finishers
-- and a retry by hand alike: a lock per key ran PostgreSQL's lock table out of shared memory
-- with a batch of 30,000 keys. Two keys in one bucket only make an enqueue and a finisher of
-- them wait for each other.
DROP TRIGGER actorq_flow_ended ON actorq_jobs;
DROP TRIGGER actorq_flow_deleted ON actorq_jobs;
DROP FUNCTION actorq_flow_ended();

-- Admit the next jobs of `keys` (admitted jobs of theirs just ended): their locks shared, in
-- hash order; actorq_admit for each key with a blocked job. Duplicate keys are taken once.
-- jit off: enable_sort off makes the lock query's sort cost look enormous, and a plan that
-- costly is compiled by the JIT at every call (70 ms each).
CREATE FUNCTION actorq_flow_freed(keys text[]) RETURNS void LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan SET enable_sort = off SET jit = off AS $$
DECLARE
    k text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('actorq.flow:' || current_schema()), d.h)
       FROM (SELECT DISTINCT hashtext(x) & 1023 AS h FROM unnest(keys) AS x ORDER BY h) d;
    -- one statement finds the keys with a blocked job (the ORDER BY keeps each lookup on
    -- actorq_jobs_flow, see actorq_admit in 012); only those run the admission
    FOR k IN SELECT u.x FROM (SELECT DISTINCT x FROM unnest(keys) AS x) u
             CROSS JOIN LATERAL (SELECT 1 FROM actorq_jobs b WHERE b.flow_key = u.x AND b.state = 'blocked'
                                 ORDER BY b.flow_key, b.state, b.id LIMIT 1) f LOOP
        PERFORM actorq_admit(k);
    END LOOP;
END $$;

CREATE FUNCTION actorq_flow_ended_rows() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM actorq_flow_before WHERE flow_key IS NOT NULL) THEN
        RETURN NULL;  -- the common case: no keyed row changed (a lease, an ack of keyless jobs)
    END IF;
    PERFORM actorq_flow_freed(ARRAY(
        SELECT o.flow_key FROM actorq_flow_before o JOIN actorq_flow_after n ON n.id = o.id
         WHERE o.flow_key IS NOT NULL AND o.state IN ('scheduled', 'ready', 'leased', 'retry')
           AND n.state IN ('succeeded', 'failed', 'dead', 'cancelled')));
    RETURN NULL;
END $$;

CREATE FUNCTION actorq_flow_deleted_rows() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM actorq_flow_before WHERE flow_key IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    PERFORM actorq_flow_freed(ARRAY(
        SELECT o.flow_key FROM actorq_flow_before o
         WHERE o.flow_key IS NOT NULL AND o.state IN ('scheduled', 'ready', 'leased', 'retry')));
    RETURN NULL;
END $$;

-- admitted jobs ended (a retry, release or reclaim to ready keeps the slot: not a final state)
CREATE TRIGGER actorq_flow_ended AFTER UPDATE ON actorq_jobs
    REFERENCING OLD TABLE AS actorq_flow_before NEW TABLE AS actorq_flow_after
    FOR EACH STATEMENT EXECUTE FUNCTION actorq_flow_ended_rows();
-- admitted jobs deleted (a queue cleared)
CREATE TRIGGER actorq_flow_deleted AFTER DELETE ON actorq_jobs
    REFERENCING OLD TABLE AS actorq_flow_before
    FOR EACH STATEMENT EXECUTE FUNCTION actorq_flow_deleted_rows();

-- a finished job retried by hand (back to blocked): its key's bucket, exclusive
CREATE OR REPLACE FUNCTION actorq_flow_reblocked() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('actorq.flow:' || current_schema()), hashtext(NEW.flow_key) & 1023);
    PERFORM actorq_admit(NEW.flow_key);
    RETURN NULL;
END $$;
