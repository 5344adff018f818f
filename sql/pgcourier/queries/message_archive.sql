-- Acknowledges by moving to the queue's archive table, for queues that keep history.
WITH acked AS (
    DELETE FROM {queue} WHERE msg_id = ANY(%(msg_ids)s::bigint[])
    RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers
)
INSERT INTO {archive} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers)
SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers FROM acked
