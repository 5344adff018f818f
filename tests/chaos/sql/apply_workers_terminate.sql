-- Terminates the logical replication apply workers of this database's link
-- subscriptions (Postgres's launcher, or the links keeper's nudge, starts them again).
-- pg_stat_subscription lists every database's: only this one's are touched.
SELECT count(*) FILTER (WHERE pg_terminate_backend(st.pid))
FROM pg_stat_subscription st
JOIN pg_subscription s ON s.oid = st.subid
WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.subname LIKE 'pgcourier\_from\_%'
  AND st.pid IS NOT NULL
