-- The dead letters and the outbox rows (waiting to cross a link) that carry the
-- correlation id, in the same shape as console_correlation_queue.
SELECT queue_name AS queue, 'dead letter' AS place, msg_id, attempts AS read_ct, enqueued_at,
       dead_at AS done_at, message, headers, errors -> -1 ->> 'error' AS error
FROM pgcourier.dead_letter WHERE headers ->> 'correlation_id' = %(correlation_id)s
UNION ALL
SELECT target || ':' || queue_name, 'outbox', id, 0, created_at, NULL, message, headers, NULL
FROM pgcourier.outbox
WHERE forget_below IS NULL AND headers ->> 'correlation_id' = %(correlation_id)s
