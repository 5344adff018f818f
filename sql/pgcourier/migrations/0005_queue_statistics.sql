-- The planner's statistics of a queue that grew from empty, refreshed on a worker's
-- request, by whoever may consume it or not.
--
-- A queue table is often vacuumed or analyzed while empty, and the planner then
-- believes it holds no rows (pg_class.reltuples = 0) until the next ANALYZE: a claim
-- planned meanwhile (every prepared or cached claim plan is, once) scans and joins as
-- for an empty table. Measured: a claim of 50 from 20,000 ready messages took 100 ms
-- with such a plan, against 1.4 ms with the index plan. Autovacuum analyzes such a
-- queue only at its next visit (up to autovacuum_naptime, a minute by default); a
-- worker calls this every maintenance interval (2 s) instead.
--
-- It analyzes only a table analyzed or vacuumed before whose statistics say it is at
-- least ten times smaller than it is (1,000 live rows at least, as counted by the
-- cumulative statistics): calling it
-- is harmless and mostly does nothing, so every role may. ANALYZE invalidates every
-- plan cached on the table, in every session.
CREATE FUNCTION pgcourier.queue_refresh_statistics(queue_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_table regclass := to_regclass(format('pgmq.%I', 'q_' || queue_name));
    planned double precision;
    live bigint;
BEGIN
    IF queue_table IS NULL THEN
        RETURN false;
    END IF;
    SELECT c.reltuples, coalesce(s.n_live_tup, 0) INTO planned, live
    FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    WHERE c.oid = queue_table;
    -- Never analyzed nor vacuumed (reltuples -1): the planner estimates the rows
    -- from the table's size as it is, so nothing is stale.
    IF planned < 0 OR live < 1000 OR planned * 10 >= live THEN
        RETURN false;
    END IF;
    -- SKIP_LOCKED: when another worker is analyzing it (or a vacuum runs), leave it
    -- to them rather than hold a connection waiting; then say whether it was done.
    EXECUTE format('ANALYZE (SKIP_LOCKED) %s', queue_table);
    RETURN (SELECT c.reltuples <> planned FROM pg_class c WHERE c.oid = queue_table);
END
$$;
