-- actorq PostgreSQL journal, migration 015: rules per flow key (a task's key_rate, key_burst, key_circuit_breaker).
-- What the task declares for each key of its jobs (an ordering or a concurrency key) ...
ALTER TABLE actorq_tasks ADD COLUMN key_rate text;
ALTER TABLE actorq_tasks ADD COLUMN key_per_second float8 CHECK (key_per_second IS NULL OR key_per_second > 0);
ALTER TABLE actorq_tasks ADD COLUMN key_burst integer CHECK (key_burst IS NULL OR key_burst >= 1);
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_failures integer CHECK (key_breaker_failures IS NULL OR key_breaker_failures >= 1);
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_window float8;
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_cool_down float8;
ALTER TABLE actorq_tasks ADD COLUMN key_breaker_probes integer CHECK (key_breaker_probes IS NULL OR key_breaker_probes >= 1);

-- ... and where each (task, key) stands: its bucket (tokens at tokens_at, Unix seconds), its
-- breaker (as actorq_breakers), due_at (when its rules let more of its blocked jobs in: a
-- token, the end of a cool-down; NULL: only a finishing job of the key does) and idle_at (from
-- when the row holds nothing a new row would not, or its breaker has been open with nothing
-- touching it for a cool-down and a window: `actorq_key_tick` deletes it then). Written,
-- under the row's lock, by actorq_admit (which its key's advisory lock precedes), by `fail`
-- (a failure counted) and `complete` (a half-open key's probe succeeded).
CREATE TABLE actorq_key_rules (
    task       text COLLATE "C" NOT NULL,
    flow_key   text COLLATE "C" NOT NULL,
    tokens     float8,
    tokens_at  float8,
    state      text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failed_at  text NOT NULL DEFAULT '[]',
    opened_at  float8,
    due_at     float8,
    idle_at    float8,
    changed_at float8 NOT NULL,
    PRIMARY KEY (task, flow_key)
);
CREATE INDEX actorq_key_rules_due ON actorq_key_rules (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX actorq_key_rules_idle ON actorq_key_rules (idle_at) WHERE idle_at IS NOT NULL;
CREATE INDEX actorq_key_rules_not_closed ON actorq_key_rules (state, task, flow_key) WHERE state <> 'closed';

-- Admission (migration 012), now within the rules per key of the task of the key's first
-- blocked job: its free slots, and at most the whole tokens of the key's bucket, and nothing
-- while its breaker is open (half-open: its probes less its admitted jobs). The same
-- arithmetic as actorq/journal/_limits.py (key_room, key_spent), which the SQLite and memory
-- journals run: a contract suite holds the three to one behaviour.
-- jit off: with sorts off, a plan that needs one looks costly enough to be compiled at every
-- call (see actorq_flow_freed, migration 014).
CREATE OR REPLACE FUNCTION actorq_admit(fkey text) RETURNS integer LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan SET enable_sort = off SET jit = off AS $$
DECLARE
    room integer;
    moved integer;
    htask text;
    admitted integer;
    r record;
    ruled boolean;
    k_tokens float8;
    k_tokens_at float8;
    k_state text;
    k_failed_at text;
    k_opened_at float8;
    t float8;
    st text;
    tokens float8;
    wait float8;
    idle float8;
BEGIN
    SELECT b.flow_limit, b.task INTO room, htask FROM actorq_jobs b WHERE b.flow_key = fkey AND b.state = 'blocked'
      ORDER BY b.flow_key, b.state, b.id LIMIT 1;
    IF room IS NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) INTO admitted FROM actorq_jobs a WHERE a.flow_key = fkey
       AND a.state IN ('scheduled', 'ready', 'leased', 'retry');
    room := room - admitted;
    IF room <= 0 THEN
        RETURN 0;
    END IF;
    SELECT key_per_second, key_burst, key_breaker_window, key_breaker_cool_down, key_breaker_probes,
           key_breaker_failures IS NOT NULL AS breaker
      INTO r FROM actorq_tasks WHERE name = htask AND (key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL);
    ruled := FOUND;
    IF ruled THEN
        t := extract(epoch FROM clock_timestamp());
        INSERT INTO actorq_key_rules (task, flow_key, changed_at) VALUES (htask, fkey, t) ON CONFLICT DO NOTHING;
        -- none (a prune took it meanwhile): a new key's, a full bucket and a closed breaker
        SELECT kr.tokens, kr.tokens_at, kr.state, kr.failed_at, kr.opened_at
          INTO k_tokens, k_tokens_at, k_state, k_failed_at, k_opened_at
          FROM actorq_key_rules kr WHERE kr.task = htask AND kr.flow_key = fkey FOR UPDATE;
        st := coalesce(k_state, 'closed');
        IF r.breaker THEN
            IF st = 'open' THEN
                IF t < coalesce(k_opened_at, t) + r.key_breaker_cool_down THEN
                    room := 0;
                    wait := coalesce(k_opened_at, t) + r.key_breaker_cool_down - t;
                ELSE
                    st := 'half_open';
                END IF;
            END IF;
            IF st = 'half_open' THEN
                room := least(room, greatest(0, r.key_breaker_probes - admitted));
            END IF;
        END IF;
        tokens := k_tokens;
        IF r.key_per_second IS NOT NULL THEN
            tokens := least(r.key_burst::float8, coalesce(k_tokens, r.key_burst::float8)
                            + greatest(0, t - coalesce(k_tokens_at, t)) * r.key_per_second);
            room := least(room, greatest(0, floor(tokens + 1e-9))::integer);
        END IF;
    END IF;
    moved := 0;
    IF room > 0 THEN
        WITH picked AS (
            SELECT id FROM actorq_jobs WHERE flow_key = fkey AND state = 'blocked' ORDER BY flow_key, state, id
            LIMIT room FOR UPDATE SKIP LOCKED),
        admitted_now AS (
            -- clock_timestamp, not now(): this transaction may have begun before the job's enqueue
            UPDATE actorq_jobs j SET state = CASE WHEN j.run_at > clock_timestamp() THEN 'scheduled' ELSE 'ready' END
            FROM picked WHERE j.id = picked.id RETURNING j.queue, j.state)
        SELECT count(*) INTO moved FROM admitted_now,
            LATERAL (SELECT CASE WHEN admitted_now.state = 'ready'
                     THEN pg_notify(current_schema(), admitted_now.queue) END) n;
    END IF;
    IF ruled THEN
        IF r.key_per_second IS NOT NULL THEN
            tokens := tokens - moved;
            IF floor(tokens + 1e-9) <= 0 THEN  -- the bucket is empty: due when its next token is
                wait := least(coalesce(wait, 'infinity'::float8),
                              greatest(0, (floor(tokens + 1e-9) + 1 - tokens) / r.key_per_second));
            END IF;
        END IF;
        -- a breaker not closed is forgotten a cool-down and a window after it opened or let
        -- its probes in, if nothing touches its row meanwhile (see _limits.key_idle_at)
        idle := CASE WHEN st = 'open' THEN coalesce(k_opened_at, t) ELSE t END + r.key_breaker_cool_down
                + r.key_breaker_window;
        IF st = 'closed' THEN
            idle := t;
            IF r.key_per_second IS NOT NULL THEN
                idle := greatest(idle, t + greatest(0, r.key_burst - tokens) / r.key_per_second);
            END IF;
            IF r.breaker THEN
                idle := greatest(idle, coalesce((SELECT max(value::float8) FROM json_array_elements_text(
                    coalesce(k_failed_at, '[]')::json)), t - r.key_breaker_window) + r.key_breaker_window);
            END IF;
        END IF;
        INSERT INTO actorq_key_rules AS kr (task, flow_key, tokens, tokens_at, state, failed_at, opened_at, due_at,
                                            idle_at, changed_at)
        VALUES (htask, fkey, tokens, CASE WHEN r.key_per_second IS NULL THEN NULL ELSE t END, st,
                coalesce(k_failed_at, '[]'), k_opened_at, t + wait, idle, t)
        ON CONFLICT (task, flow_key) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at,
            state = excluded.state, due_at = excluded.due_at, idle_at = excluded.idle_at,
            changed_at = excluded.changed_at;
    END IF;
    RETURN moved;
END $$;

-- A keyed job inserted blocked while its task has rules per key: the enqueue statement leaves
-- every such job blocked (the key's rules, not the insert, decide), and this admits it, after
-- the statement, under the key's lock its enqueuer holds. Jobs without a key never get here
-- (the WHEN); a blocked job of a task without such rules costs one lookup of its task.
CREATE FUNCTION actorq_key_held() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM actorq_tasks WHERE name = NEW.task
               AND (key_rate IS NOT NULL OR key_breaker_failures IS NOT NULL)) THEN
        PERFORM actorq_admit(NEW.flow_key);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER actorq_key_held AFTER INSERT ON actorq_jobs FOR EACH ROW
    WHEN (NEW.state = 'blocked')
    EXECUTE FUNCTION actorq_key_held();

-- The periodic part (a node's `promote`): admit the keys whose due_at has passed, at most
-- `keys` of them (each under its key's lock, shared as a finisher's, then its row's), then
-- delete at most `pruned` rows that hold nothing. Returns the jobs admitted.
CREATE FUNCTION actorq_key_tick(keys integer, pruned integer) RETURNS integer LANGUAGE plpgsql
    SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    d record;
    moved integer := 0;
    t float8 := extract(epoch FROM clock_timestamp());
BEGIN
    -- the due keys' buckets first, shared, in bucket order as every other taker (migration 014)
    PERFORM pg_advisory_xact_lock_shared(hashtext('actorq.flow:' || current_schema()), b.h)
       FROM (SELECT DISTINCT hashtext(s.flow_key) & 1023 AS h FROM (SELECT flow_key FROM actorq_key_rules
             WHERE due_at <= t ORDER BY due_at LIMIT keys) s ORDER BY h) b;
    FOR d IN SELECT task, flow_key FROM actorq_key_rules WHERE due_at <= t ORDER BY due_at LIMIT keys LOOP
        -- held already, unless the key came due between the two reads
        PERFORM pg_advisory_xact_lock_shared(hashtext('actorq.flow:' || current_schema()), hashtext(d.flow_key) & 1023);
        UPDATE actorq_key_rules SET due_at = NULL WHERE task = d.task AND flow_key = d.flow_key AND due_at <= t;
        IF FOUND THEN
            moved := moved + actorq_admit(d.flow_key);
        END IF;
    END LOOP;
    DELETE FROM actorq_key_rules WHERE ctid IN (SELECT ctid FROM actorq_key_rules
        WHERE idle_at <= t AND due_at IS NULL ORDER BY idle_at LIMIT pruned FOR UPDATE SKIP LOCKED);
    RETURN moved;
END $$;
