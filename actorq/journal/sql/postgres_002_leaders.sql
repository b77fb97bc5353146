-- actorq PostgreSQL journal, migration 002: leadership of the duties that run once among
-- the nodes sharing a journal (rescuing expired leases; later cron ticks, pruning).
-- A holder keeps a name while it renews before expires_at, which is set by the
-- database's clock; anyone may take a name whose expires_at has passed.

CREATE TABLE actorq_leaders (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL
);
