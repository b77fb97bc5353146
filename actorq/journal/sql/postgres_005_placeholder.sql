-- PLACEHOLDER for migration 005 (cron schedules, written on another branch). It exists only
-- so that migration 006 (results) can be applied and tested here; the merge drops it.
SELECT 1;
