-- Schedules failed messages for another attempt after their backoff and appends the
-- attempt's error to the message's history. last_read_at is cleared so the message
-- counts as delayed, not in flight.
UPDATE {queue} m
SET vt = coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => r.delay_s),
    last_read_at = NULL,
    headers = coalesce(m.headers, '{{}}'::jsonb) || jsonb_build_object(
        'pgcourier_errors', coalesce(m.headers -> 'pgcourier_errors', '[]'::jsonb) || r.error)
FROM unnest(%(msg_ids)s::bigint[], %(delays)s::float8[], %(errors)s::text[]::jsonb[])
     AS r(msg_id, delay_s, error)
WHERE m.msg_id = r.msg_id
