-- actorq PostgreSQL journal, migration 004: the task defaults catalog.
-- Each node writes the declarations of its task registry at start (last writer wins),
-- so a producer that does not import the registry can still apply a task's declared
-- queue, priority and max_attempts.
CREATE TABLE actorq_tasks (
    name         text COLLATE "C" PRIMARY KEY,     -- the registered task name
    queue        text COLLATE "C" NOT NULL,
    priority     integer NOT NULL,
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    declared_at  timestamptz NOT NULL DEFAULT now()
);
