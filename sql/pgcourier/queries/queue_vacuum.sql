-- Dead rows pile up at the head of a queue table, where every claim starts its scan:
-- vacuum when they do, without waiting for autovacuum (which may be off or slow).
-- SKIP_LOCKED: if another worker is vacuuming it already, leave it to them.
VACUUM (SKIP_LOCKED, ANALYZE) {queue}
