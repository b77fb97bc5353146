-- actorq PostgreSQL journal, migration 010: reserved for another feature (empty here).
SELECT 1;
