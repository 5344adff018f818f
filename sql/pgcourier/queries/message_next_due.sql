-- Seconds until the next message becomes claimable (a delay, a backoff or a lease
-- running out); NULL when the queue is empty.
SELECT extract(epoch FROM min(vt) - coalesce(%(now)s::timestamptz, clock_timestamp()))::float8
FROM {queue}
