-- actorq PostgreSQL journal, migration 012: flow keys (ordering keys, concurrency keys).
-- A job with a key (flow_key: 'o:' || ordering key, or 'c:' || concurrency key) is inserted
-- blocked and admitted, in id order, while its key has fewer than flow_limit admitted jobs
-- (scheduled, ready, leased or retry; an ordering key's limit is 1). The claim never reads a
-- blocked job; jobs without a key pay only the triggers' WHEN tests.
--
-- Who admits, and the locks that keep every slot counted across nodes (lock space
-- hashtext('actorq.flow:' || schema), one lock per hashtext(flow_key)):
-- * an enqueue of keyed jobs takes its keys' locks EXCLUSIVE, in key order, then inserts
--   and calls actorq_admit for each key (actorq/journal/postgres.py);
-- * a statement that ends an admitted job (a trigger, whatever the statement) takes its
--   key's lock SHARED, then calls actorq_admit: finishers never wait for each other, and an
--   enqueue of the key waits until they commit, so its count sees their ends; a finisher
--   that waited for an enqueue sees the jobs it inserted blocked, and admits them;
-- * a finished job retried by hand comes back blocked and takes its key's lock EXCLUSIVE.
ALTER TABLE actorq_jobs DROP CONSTRAINT actorq_jobs_state_check;
ALTER TABLE actorq_jobs ADD CONSTRAINT actorq_jobs_state_check CHECK (state IN
    ('blocked', 'scheduled', 'ready', 'leased', 'retry', 'succeeded', 'failed', 'dead', 'cancelled'));
ALTER TABLE actorq_jobs ADD COLUMN flow_key text COLLATE "C";
ALTER TABLE actorq_jobs ADD COLUMN flow_limit integer
    CHECK (flow_limit IS NULL OR (flow_limit >= 1 AND flow_key IS NOT NULL));
ALTER TABLE actorq_jobs ADD CONSTRAINT actorq_jobs_blocked_keyed CHECK (state <> 'blocked' OR flow_key IS NOT NULL);
-- a blocked job holds its unique key, waits (max_depth) and is listed, as the other live states
DROP INDEX actorq_jobs_unique;
CREATE UNIQUE INDEX actorq_jobs_unique ON actorq_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('blocked', 'scheduled', 'ready', 'leased', 'retry');
DROP INDEX actorq_jobs_waiting;
CREATE INDEX actorq_jobs_waiting ON actorq_jobs (queue) WHERE state IN ('blocked', 'scheduled', 'retry');
DROP INDEX actorq_jobs_state_queue;
CREATE INDEX actorq_jobs_state_queue ON actorq_jobs (state, queue, id)
    WHERE state IN ('blocked', 'scheduled', 'retry', 'failed', 'dead', 'cancelled');
-- Live keyed rows: a key's admitted jobs are counted, and its blocked ones taken in id order, here.
CREATE INDEX actorq_jobs_flow ON actorq_jobs (flow_key, state, id)
    WHERE flow_key IS NOT NULL AND state IN ('blocked', 'scheduled', 'ready', 'leased', 'retry');

-- Admit the earliest blocked jobs of `fkey` into its free slots (the limit of the earliest
-- blocked one, less the admitted jobs); NOTIFY the schema's channel with each queue that got
-- a ready job, as an enqueue does. Returns how many were admitted. The caller holds the key's
-- lock. A blocked row another transaction holds (a cancel of it) is passed over.
-- Generic plans: the journal's sessions force custom ones (for the claim's statements), which
-- would plan each query here again at every call (~0.2 ms each); these are index lookups.
-- enable_sort off, and an ORDER BY that actorq_jobs_flow yields: statistics taken before any
-- job had a key (or was blocked) make every index whose predicate `state = 'blocked'` implies
-- look empty, and the planner then took actorq_jobs_waiting and filtered every blocked job of
-- every key by flow_key (2.7 ms a call with 10,000 blocked); a sort it cannot have keeps it on
-- the keys' own index.
CREATE FUNCTION actorq_admit(fkey text) RETURNS integer LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan SET enable_sort = off AS $$
DECLARE
    room integer;
    moved integer;
BEGIN
    SELECT b.flow_limit - (SELECT count(*) FROM actorq_jobs a WHERE a.flow_key = fkey
                           AND a.state IN ('scheduled', 'ready', 'leased', 'retry'))
      INTO room FROM actorq_jobs b WHERE b.flow_key = fkey AND b.state = 'blocked'
      ORDER BY b.flow_key, b.state, b.id LIMIT 1;
    IF room IS NULL OR room <= 0 THEN
        RETURN 0;
    END IF;
    WITH picked AS (
        SELECT id FROM actorq_jobs WHERE flow_key = fkey AND state = 'blocked' ORDER BY flow_key, state, id LIMIT room
        FOR UPDATE SKIP LOCKED),
    admitted AS (
        -- clock_timestamp, not now(): this transaction may have begun before the job's enqueue
        UPDATE actorq_jobs j SET state = CASE WHEN j.run_at > clock_timestamp() THEN 'scheduled' ELSE 'ready' END
        FROM picked WHERE j.id = picked.id RETURNING j.queue, j.state)
    SELECT count(*) INTO moved FROM admitted,
        LATERAL (SELECT CASE WHEN admitted.state = 'ready' THEN pg_notify(current_schema(), admitted.queue) END) n;
    RETURN moved;
END $$;

CREATE FUNCTION actorq_flow_ended() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('actorq.flow:' || current_schema()), hashtext(OLD.flow_key));
    PERFORM actorq_admit(OLD.flow_key);
    RETURN NULL;
END $$;

CREATE FUNCTION actorq_flow_reblocked() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('actorq.flow:' || current_schema()), hashtext(NEW.flow_key));
    PERFORM actorq_admit(NEW.flow_key);
    RETURN NULL;
END $$;

-- an admitted job finished (a retry, release or reclaim to ready keeps its slot)
CREATE TRIGGER actorq_flow_ended AFTER UPDATE OF state ON actorq_jobs FOR EACH ROW
    WHEN (OLD.flow_key IS NOT NULL AND OLD.state IN ('scheduled', 'ready', 'leased', 'retry')
          AND NEW.state IN ('succeeded', 'failed', 'dead', 'cancelled'))
    EXECUTE FUNCTION actorq_flow_ended();
-- an admitted job deleted (a queue cleared)
CREATE TRIGGER actorq_flow_deleted AFTER DELETE ON actorq_jobs FOR EACH ROW
    WHEN (OLD.flow_key IS NOT NULL AND OLD.state IN ('scheduled', 'ready', 'leased', 'retry'))
    EXECUTE FUNCTION actorq_flow_ended();
-- a finished job retried by hand: back to blocked
CREATE TRIGGER actorq_flow_reblocked AFTER UPDATE OF state ON actorq_jobs FOR EACH ROW
    WHEN (NEW.state = 'blocked' AND OLD.state <> 'blocked')
    EXECUTE FUNCTION actorq_flow_reblocked();

-- A task's declared limit and rule for its jobs with a concurrency key (NULL: 1, and they wait).
ALTER TABLE actorq_tasks ADD COLUMN concurrency_limit integer CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1);
ALTER TABLE actorq_tasks ADD COLUMN on_conflict text CHECK (on_conflict IS NULL OR on_conflict IN ('block', 'discard'));
