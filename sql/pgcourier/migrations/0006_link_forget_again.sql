-- A receiver forgets a sender's ids (pgcourier.link_received) when a "forget below"
-- control row arrives: every id below it whose transaction was over when the row was
-- made (its xid below the row's forget_xmin). link_prune made one such row per
-- thousand ids. A transaction running when one was made (say, a batch still being
-- sent, which holds ids on both sides of the row's) kept its ids remembered until the
-- next row, a thousand ids later: on a quiet link, for ever. Seen in 1 of 4 to 1 of 8
-- runs of the keeper test (1,100 ids sent in one batch, every one kept).
--
-- Now link_prune remembers whether its last row was made while an older transaction
-- ran (forget_pending) and with which xmin, and makes another as soon as the
-- snapshot's xmin has passed it. Each row is as safe as before (the same rule);
-- under a steady load that always has a transaction running, that is at most one
-- more row a keeper turn (a second by default) per link.
ALTER TABLE pgcourier.link
    ADD COLUMN forgotten_xmin xid8,
    ADD COLUMN forget_pending boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION pgcourier.link_prune() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    l        record;
    confirmed pg_lsn;
    snap     pg_snapshot;
    oldest   xid8;  -- the snapshot's xmin (not `xmin`: a column of every table)
    low      bigint;
    n        bigint;
    total    bigint := 0;
BEGIN
    -- Only a sender by replication needs markers: a database that only receives (or
    -- relays) would otherwise gather one a second for a day.
    INSERT INTO pgcourier.link_marker (lsn, snap)
    SELECT pg_current_wal_insert_lsn(), pg_current_snapshot()
    WHERE EXISTS (SELECT 1 FROM pgcourier.link k WHERE k.mode = 'replication');
    FOR l IN SELECT * FROM pgcourier.link LOOP
        IF l.mode = 'replication' THEN
            SELECT s.confirmed_flush_lsn INTO confirmed
            FROM pg_replication_slots s WHERE s.slot_name = l.slot_name;
            SELECT m.snap INTO snap FROM pgcourier.link_marker m
            WHERE m.lsn <= confirmed ORDER BY m.lsn DESC LIMIT 1;
            IF snap IS NOT NULL THEN
                DELETE FROM pgcourier.outbox o
                WHERE o.target = l.node AND pg_visible_in_snapshot(o.xid, snap);
                GET DIAGNOSTICS n = ROW_COUNT;
                total := total + n;
            END IF;
        END IF;
        DELETE FROM pgcourier.outbox o
        WHERE o.target = l.node
          AND o.created_at < clock_timestamp() - make_interval(secs => l.retention_s);
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            UPDATE pgcourier.link SET expired = expired + n,
                last_error = format('%s rows kept past the retention (%s s) were dropped', n, l.retention_s),
                last_error_at = clock_timestamp()
            WHERE node = l.node;
        END IF;
        IF l.mode = 'replication' THEN
            -- Every id below the lowest one kept (or below the next id, if none is kept)
            -- whose transaction was over when this statement began is confirmed and
            -- gone: the receiver may forget it. A transaction still running then may
            -- hold a lower id and commit (and be delivered) before the control row:
            -- its xid is at or above the snapshot's xmin, so it is kept until a later
            -- round. The next id is the sequence's, not max(id) + 1: pruning empties
            -- the outbox, and an empty one would never let the receiver forget anything.
            SELECT coalesce(min(o.id), pgcourier.outbox_next_id()),
                   pg_snapshot_xmin(pg_current_snapshot())
            INTO low, oldest
            FROM pgcourier.outbox o WHERE o.target = l.node AND o.forget_below IS NULL;
            -- Again, whatever the ids, once the transactions that held the last row's
            -- xmin back are over and their rows are pruned (low reaches the last
            -- row's): otherwise the ids they kept the receiver from forgetting would
            -- wait for a thousand more ids, which a quiet link may never send.
            IF low > l.forgotten_below + 1000
               OR (l.forget_pending AND low >= l.forgotten_below
                   AND oldest > l.forgotten_xmin) THEN
                INSERT INTO pgcourier.outbox (target, forget_below, forget_xmin)
                VALUES (l.node, low, oldest);
                -- Pending: a transaction older than this one was running, so the
                -- receiver will keep some ids below `low` (those of its xid and after).
                UPDATE pgcourier.link
                SET forgotten_below = low, forgotten_xmin = oldest,
                    forget_pending = oldest < pg_current_xact_id()
                WHERE node = l.node;
            END IF;
        END IF;
    END LOOP;
    -- Keep the markers still needed: those not yet confirmed, and the newest that is.
    DELETE FROM pgcourier.link_marker m
    WHERE m.lsn < (SELECT min(s.confirmed_flush_lsn) FROM pgcourier.link k
                   JOIN pg_replication_slots s ON s.slot_name = k.slot_name)
      AND m.taken_at < clock_timestamp() - interval '10 seconds';
    DELETE FROM pgcourier.link_marker m WHERE m.taken_at < clock_timestamp() - interval '1 day';
    RETURN total;
END;
$$;

REVOKE EXECUTE ON FUNCTION pgcourier.link_prune() FROM PUBLIC;
