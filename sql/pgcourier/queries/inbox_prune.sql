DELETE FROM pgcourier.inbox
WHERE processed_at < coalesce(%(now)s::timestamptz, clock_timestamp()) - make_interval(secs => %(retention_s)s)
