SELECT queue_name, visibility_timeout_s, max_attempts, backoff_base_s, backoff_max_s,
       archive, archive_retention_s
FROM pgcourier.queue
WHERE queue_name = %(queue_name)s
