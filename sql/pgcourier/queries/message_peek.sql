SELECT msg_id, read_ct, enqueued_at, vt, message, headers
FROM {queue}
ORDER BY msg_id
LIMIT %(limit)s
