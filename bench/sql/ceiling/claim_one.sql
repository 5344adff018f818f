-- pgbench script: claim and delete the oldest due message, one per transaction,
-- returning it to the client as pgmq.pop(queue, 1) does.
DELETE FROM ceiling.q
WHERE msg_id = (
    SELECT msg_id FROM ceiling.q
    WHERE vt <= clock_timestamp()
    ORDER BY msg_id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING msg_id, read_ct, enqueued_at, vt, message, headers;
