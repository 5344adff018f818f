-- A queue's settings: a local queue's own, or a remote queue's as its receiver had
-- them when the link was set up (archiving is the receiver's business).
SELECT queue_name, visibility_timeout_s, max_attempts, backoff_base_s, backoff_max_s,
       archive, archive_retention_s
FROM pgcourier.queue
WHERE queue_name = %(queue_name)s
UNION ALL
SELECT queue_name, visibility_timeout_s, max_attempts, backoff_base_s, backoff_max_s,
       false, 0
FROM pgcourier.remote_queue
WHERE queue_name = %(queue_name)s AND visibility_timeout_s IS NOT NULL
LIMIT 1
