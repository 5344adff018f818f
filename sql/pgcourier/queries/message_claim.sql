-- Claims up to %(limit)s ready messages for %(vt_s)s seconds. Messages without an
-- ordering key are claimed in the order they became due (their vt),
-- which walks pgmq's vt index from the oldest due message and stops: messages
-- delayed into the future or in flight are never read, however many there are
-- (ordering by msg_id alone would scan past all of them on every claim). Of those
-- with a key (pgmq's x-pgmq-group
-- header), only the oldest of each key, and only while it is ready: a key whose
-- head is in flight or waiting for a retry is blocked, so one key runs one at a time.
-- The vt conditions sit on the locked table so that a row claimed by a concurrent
-- transaction is re-checked, not claimed twice.
WITH RECURSIVE claim_at AS (
    -- The claim commits without waiting for its WAL to reach disk (this statement is
    -- its own transaction: the worker runs it in autocommit). A claim lost in a crash
    -- is a lease lost: the message is claimed again, as at-least-once allows, and a
    -- claim's round trip is a third shorter.
    SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) AS at,
           set_config('synchronous_commit', 'off', true) AS commit_mode
),
unordered AS (
    SELECT q.msg_id
    FROM {queue} q
    -- The bound as a scalar subquery, so that it is the index scan's condition: joined
    -- to claim_at, it was a filter, and a claim that found fewer than `limit` ready
    -- messages walked on through every delayed and in-flight one (7 ms with 4,000).
    WHERE q.vt <= (SELECT at FROM claim_at)
      AND (q.headers IS NULL OR NOT q.headers ? 'x-pgmq-group')
    -- By vt alone, as pgmq's vt index is ordered: `vt, msg_id` made the planner sort
    -- every ready message (a bitmap scan, then a sort spilling to disk: 25 ms a claim
    -- with 60,000 ready) where the index walk stops after `limit` rows (0.1 ms). Sends
    -- stamp each row's vt with clock_timestamp(), so vt order is send order; rows due
    -- at the same instant (one claim's expired leases) come in index order, and every
    -- claimed batch is handed over by msg_id.
    ORDER BY q.vt
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
),
-- The keys with messages, found by skipping through the (key, msg_id) index one key
-- at a time: a claim costs one index probe per key, not a read of every keyed
-- message (DISTINCT ON over them all made a claim on 100,000 keyed messages take
-- 62 ms).
keys AS (
    (SELECT h.headers ->> 'x-pgmq-group' AS key
     FROM {queue} h
     WHERE h.headers ? 'x-pgmq-group' AND h.headers ->> 'x-pgmq-group' IS NOT NULL
     ORDER BY h.headers ->> 'x-pgmq-group'
     LIMIT 1)
    UNION ALL
    SELECT (SELECT h.headers ->> 'x-pgmq-group'
            FROM {queue} h
            WHERE h.headers ? 'x-pgmq-group' AND h.headers ->> 'x-pgmq-group' > keys.key
            ORDER BY h.headers ->> 'x-pgmq-group'
            LIMIT 1)
    FROM keys
    WHERE keys.key IS NOT NULL
),
heads AS (
    -- A message sent with a delay and not yet due (never read) does not hold its key;
    -- one waiting for a retry (read before) does, so a key's order survives failures.
    SELECT (SELECT h.msg_id
            FROM {queue} h, claim_at
            WHERE h.headers ? 'x-pgmq-group' AND h.headers ->> 'x-pgmq-group' = keys.key
              AND (h.read_ct > 0 OR h.vt <= claim_at.at)
            ORDER BY h.msg_id
            LIMIT 1) AS msg_id
    FROM keys
    WHERE keys.key IS NOT NULL
    UNION ALL
    -- Messages whose key is JSON null (other pgmq clients can send them) share one key.
    SELECT (SELECT h.msg_id
            FROM {queue} h, claim_at
            WHERE h.headers ? 'x-pgmq-group' AND h.headers ->> 'x-pgmq-group' IS NULL
              AND (h.read_ct > 0 OR h.vt <= claim_at.at)
            ORDER BY h.msg_id
            LIMIT 1)
),
ordered AS (
    SELECT q.msg_id
    FROM {queue} q, claim_at
    WHERE q.msg_id = ANY(ARRAY(SELECT msg_id FROM heads))
      AND q.vt <= claim_at.at
    ORDER BY q.msg_id
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
),
claimed AS (
    SELECT msg_id FROM (SELECT msg_id FROM unordered UNION ALL SELECT msg_id FROM ordered) c
    ORDER BY msg_id
    LIMIT %(limit)s
),
updated AS (
    UPDATE {queue} m
    SET vt = claim_at.at + make_interval(secs => %(vt_s)s),
        read_ct = m.read_ct + 1,
        last_read_at = claim_at.at
    FROM claimed, claim_at
    WHERE m.msg_id = claimed.msg_id
    -- As text: the worker decodes each message on its own, so one that its JSON
    -- decoder refuses (a number out of range, say) is dead-lettered alone instead of
    -- failing the whole batch.
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message::text, m.headers::text, m.sender,
        -- A keyed message: whether another of its key waits behind it (a JSON null key,
        -- which the index cannot look up, says yes). When it is done the worker claims
        -- again at once only then, or when a send came in meanwhile: not after every
        -- keyed message, which made every other claim an empty one.
        CASE WHEN m.headers ? 'x-pgmq-group' THEN
            m.headers ->> 'x-pgmq-group' IS NULL OR EXISTS (
                SELECT 1 FROM {queue} n
                WHERE n.headers ? 'x-pgmq-group'
                  AND n.headers ->> 'x-pgmq-group' = m.headers ->> 'x-pgmq-group'
                  AND n.msg_id > m.msg_id)
        END AS more_of_key
)
SELECT msg_id, read_ct, enqueued_at, message, headers, sender, more_of_key,
       NULL::float8 AS next_due_s
FROM updated
UNION ALL
-- When the claim is not full, one more row, saying in how many seconds the next
-- message not ready now falls due (a delay, a retry's backoff, a lease running out)
-- within the next %(horizon_s)s seconds (the worker's poll interval: it looks again
-- by then anyway); NULL when none does. The worker sleeps no longer than that, in
-- the same round trip. A full claim is followed by another at once: it skips the
-- probe (the scalar subquery runs only when the one-time filter lets the row by).
-- Only future vts count: a ready message of a key blocked behind its in-flight head
-- is not due before the head is, and counting it made the loop spin.
-- The horizon bounds the probe of the vt index: acknowledged messages leave dead
-- index entries at their lease's end, and an unbounded probe walked all 30 s of them.
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT extract(epoch FROM q.vt - claim_at.at)::float8
        FROM {queue} q
        WHERE q.vt > claim_at.at
          AND q.vt <= claim_at.at + make_interval(secs => %(horizon_s)s)
        ORDER BY q.vt LIMIT 1)
FROM claim_at
WHERE (SELECT count(*) FROM updated) < %(limit)s
