-- Drops every LISTEN connection of this database. pgcourier's listener runs LISTEN
-- once, then only `SELECT 1` when notifications are quiet; no pooled connection
-- of the shop sits idle on a bare `SELECT 1`, so both identify a listener.
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND (query ILIKE 'LISTEN %' OR (state = 'idle' AND query = 'SELECT 1'))
