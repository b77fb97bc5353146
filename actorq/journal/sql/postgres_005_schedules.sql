-- actorq PostgreSQL journal, migration 005: cron schedules.
-- One row per schedule: its definition, and the fire time it last fired (or skipped) up to.
-- `last_fired` only moves forward, and only together with the enqueue of its jobs
-- (`fire_schedule`, a compare-and-set on the value read): a time fires once, across nodes
-- and restarts. Fire times are Unix seconds computed by the scheduler from the cron
-- expression, not the database's clock: they name a point of the schedule, not a moment.
CREATE TABLE actorq_schedules (
    name       text COLLATE "C" PRIMARY KEY,
    cron       text NOT NULL,
    task       text COLLATE "C" NOT NULL,
    payload    bytea NOT NULL,                -- msgpack [args, kwargs]
    queue      text COLLATE "C",              -- NULL: the task's declared queue
    timezone   text NOT NULL,
    catch_up   text NOT NULL CHECK (catch_up IN ('none', 'last', 'all')),
    source     text NOT NULL CHECK (source IN ('file', 'api')),
    added_at   float8 NOT NULL,               -- Unix time, the first fire time is after it
    last_fired float8                         -- Unix time of the latest fire time handled, NULL: none yet
);
