-- actorq SQLite journal, schema version 3: the task defaults catalog.
-- Each node writes the declarations of its task registry at start (last writer wins),
-- so a producer that does not import the registry can still apply a task's declared
-- queue, priority and max_attempts.
CREATE TABLE actorq_tasks (
    name         TEXT PRIMARY KEY NOT NULL,   -- the registered task name
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    declared_at  REAL NOT NULL                -- Unix time of the last declaration
) WITHOUT ROWID;
