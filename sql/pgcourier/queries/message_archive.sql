-- Acknowledges by moving to the queue's archive table, for queues that keep history;
-- fenced like message_delete: only messages still held by the claims that took them.
WITH acked AS (
    DELETE FROM {queue} m
    WHERE m.msg_id = ANY(%(msg_ids)s::bigint[])
      AND (m.msg_id, m.read_ct) IN (SELECT * FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]))
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.last_read_at, m.vt, m.message, m.headers, m.sender
)
INSERT INTO {archive} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers, sender)
SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers, sender FROM acked
