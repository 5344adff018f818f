-- A queue's messages, waiting or archived, that carry the correlation id. A scan of
-- both tables: the console asks rarely, and an index per queue would cost every send.
SELECT %(queue_name)s::text AS queue, 'queue' AS place, msg_id, read_ct, enqueued_at,
       NULL::timestamptz AS done_at, message, headers, NULL::text AS error
FROM {queue} WHERE headers ->> 'correlation_id' = %(correlation_id)s
UNION ALL
SELECT %(queue_name)s::text, 'archive', msg_id, read_ct, enqueued_at, archived_at, message, headers, NULL
FROM {archive} WHERE headers ->> 'correlation_id' = %(correlation_id)s
