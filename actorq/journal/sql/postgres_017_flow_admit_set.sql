-- actorq PostgreSQL journal, migration 017: a statement that frees keys admits their next jobs
-- with one UPDATE, and the UPDATEs that admit jobs no longer run the freeing trigger's work.
--
-- Migration 014 called actorq_admit once per freed key with a blocked job. Each call's UPDATE
-- fired this table's statement triggers again (the figures, and actorq_flow_ended, which
-- found keyed rows in its transition table and called actorq_flow_freed with nothing freed):
-- 0.2 to 0.4 ms for each admitted job, so 10,000 ordering keys with a second job each ran at
-- a third of the rate with no keys. Now:
-- - actorq_flow_ended_rows looks for a keyed row that reached a final state first: a lease
--   (ready to leased) or an admission (blocked to ready) stops there;
-- - actorq_flow_freed admits the keys of tasks without rules per key in one statement (each
--   key's earliest blocked jobs, up to its free slots, in id order, as actorq_admit does, with
--   one NOTIFY per queue); keys of tasks with rules per key still go through actorq_admit;
-- - a batch's jobs held for their keys' rules are admitted by one trigger per statement, not
--   one per row (actorq_key_held looked up each blocked row's task).

CREATE OR REPLACE FUNCTION actorq_flow_freed(keys text[]) RETURNS void LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan SET enable_sort = off SET jit = off AS $$
DECLARE
    k text;
    ruled text[];
    queues text[];
    ruled_keys text[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('actorq.flow:' || current_schema()), d.h)
       FROM (SELECT DISTINCT hashtext(x) & 1023 AS h FROM unnest(keys) AS x ORDER BY h) d;
    ruled := ARRAY(SELECT name FROM actorq_tasks WHERE key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL);
    -- each key's earliest blocked job gives its limit and task (the ORDER BYs keep every lookup
    -- on actorq_jobs_flow, see actorq_admit in 012); its admitted jobs are counted; the free
    -- slots take that many blocked jobs in id order, skipping a row another transaction holds
    WITH k AS (SELECT DISTINCT x FROM unnest(keys) AS x),
    head AS MATERIALIZED (SELECT k.x, h.flow_limit, h.task FROM k CROSS JOIN LATERAL (
                 SELECT b.flow_limit, b.task FROM actorq_jobs b WHERE b.flow_key = k.x AND b.state = 'blocked'
                  ORDER BY b.flow_key, b.state, b.id LIMIT 1) h),
    -- the admitted states all sort after 'blocked': the count reads the key's admitted entries
    -- only, not its blocked ones (a state list here was a filter over all of them)
    room AS MATERIALIZED (SELECT head.x, head.flow_limit - (SELECT count(*) FROM actorq_jobs a WHERE a.flow_key = head.x
                 AND a.state > 'blocked' AND a.state IN ('scheduled', 'ready', 'leased', 'retry')) AS n
               FROM head WHERE head.task <> ALL(ruled)),
    picked AS (SELECT p.id FROM room CROSS JOIN LATERAL (
                   SELECT b.id FROM actorq_jobs b WHERE b.flow_key = room.x AND b.state = 'blocked'
                    ORDER BY b.flow_key, b.state, b.id LIMIT greatest(room.n, 0) FOR UPDATE SKIP LOCKED) p
                WHERE room.n > 0),
    admitted_now AS (
        -- clock_timestamp, not now(): this transaction may have begun before the job's enqueue
        UPDATE actorq_jobs j SET state = CASE WHEN j.run_at > clock_timestamp() THEN 'scheduled' ELSE 'ready' END
          FROM picked WHERE j.id = picked.id RETURNING j.queue, j.state)
    SELECT ARRAY(SELECT DISTINCT queue FROM admitted_now WHERE state = 'ready'),
           ARRAY(SELECT head.x FROM head WHERE head.task = ANY(ruled) ORDER BY head.x)
      INTO queues, ruled_keys;
    PERFORM pg_notify(current_schema(), q) FROM unnest(queues) AS q;
    FOREACH k IN ARRAY ruled_keys LOOP
        PERFORM actorq_admit(k);  -- a key of a task with rules per key: its rules decide
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION actorq_flow_ended_rows() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM actorq_flow_after
                    WHERE flow_key IS NOT NULL AND state IN ('succeeded', 'failed', 'dead', 'cancelled')) THEN
        RETURN NULL;  -- the common case: no keyed row reached a final state (a lease, an admission)
    END IF;
    PERFORM actorq_flow_freed(ARRAY(
        SELECT o.flow_key FROM actorq_flow_before o JOIN actorq_flow_after n ON n.id = o.id
         WHERE o.flow_key IS NOT NULL AND o.state IN ('scheduled', 'ready', 'leased', 'retry')
           AND n.state IN ('succeeded', 'failed', 'dead', 'cancelled')));
    RETURN NULL;
END $$;

-- Jobs inserted blocked while their task has rules per key (see actorq_key_held, 015): their
-- keys' rules admit them, after the statement, under the keys' locks their enqueuer holds. A
-- statement without such a task (the common case) reads the tasks table once and stops.
DROP TRIGGER actorq_key_held ON actorq_jobs;
DROP FUNCTION actorq_key_held();
CREATE FUNCTION actorq_key_held_rows() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    k text;
    ruled text[];
BEGIN
    ruled := ARRAY(SELECT name FROM actorq_tasks WHERE key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL);
    IF cardinality(ruled) = 0 THEN
        RETURN NULL;
    END IF;
    FOR k IN SELECT DISTINCT n.flow_key FROM actorq_key_inserted n
              WHERE n.state = 'blocked' AND n.task = ANY(ruled) ORDER BY n.flow_key LOOP
        PERFORM actorq_admit(k);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER actorq_key_held AFTER INSERT ON actorq_jobs
    REFERENCING NEW TABLE AS actorq_key_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION actorq_key_held_rows();
