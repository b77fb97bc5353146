-- actorq SQLite journal, schema version 9: reserved for another feature (empty here).
SELECT 1;
