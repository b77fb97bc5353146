-- actorq SQLite journal, schema version 4: cron schedules.
-- One row per schedule: its definition, and the fire time it last fired (or skipped) up to.
-- `last_fired` only moves forward, and only together with the enqueue of its jobs
-- (`fire_schedule`, a compare-and-set on the value read): a time fires once, across restarts.
CREATE TABLE actorq_schedules (
    name       TEXT PRIMARY KEY NOT NULL,
    cron       TEXT NOT NULL,
    task       TEXT NOT NULL,
    payload    BLOB NOT NULL,                 -- msgpack [args, kwargs]
    queue      TEXT,                          -- NULL: the task's declared queue
    timezone   TEXT NOT NULL,
    catch_up   TEXT NOT NULL CHECK (catch_up IN ('none', 'last', 'all')),
    source     TEXT NOT NULL CHECK (source IN ('file', 'api')),
    added_at   REAL NOT NULL,                 -- Unix time, the first fire time is after it
    last_fired REAL                           -- Unix time of the latest fire time handled, NULL: none yet
) WITHOUT ROWID;
