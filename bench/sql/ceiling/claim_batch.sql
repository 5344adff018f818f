-- pgbench script: claim and delete the 100 oldest due messages per transaction,
-- returning them to the client, the statement pgmq.pop(queue, 100) runs.
DELETE FROM ceiling.q
WHERE msg_id IN (
    SELECT msg_id FROM ceiling.q
    WHERE vt <= clock_timestamp()
    ORDER BY msg_id
    FOR UPDATE SKIP LOCKED
    LIMIT 100
)
RETURNING msg_id, read_ct, enqueued_at, vt, message, headers;
