-- One message by its pgmq id, where it still is: the queue, or the archive once
-- acknowledged (queues with archive on).
SELECT 'queue' AS place, msg_id, read_ct, enqueued_at, vt, NULL::timestamptz AS archived_at,
       message, headers, sender
FROM {queue} WHERE msg_id = %(msg_id)s
UNION ALL
SELECT 'archive', msg_id, read_ct, enqueued_at, vt, archived_at, message, headers, sender
FROM {archive} WHERE msg_id = %(msg_id)s
