-- Schedules failed messages for another attempt after their backoff and appends the
-- attempt's error to the message's history (which is also how attempts are counted:
-- reads by other pgmq clients leave no error here). last_read_at is cleared so the
-- message counts as delayed, not in flight. Fenced: only messages still held by
-- the claims that took them (same read_ct) are touched.
UPDATE {queue} m
SET vt = coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => r.delay_s),
    last_read_at = NULL,
    headers = (CASE jsonb_typeof(m.headers) WHEN 'object' THEN m.headers ELSE '{{}}'::jsonb END)
        || jsonb_build_object('x-pgcourier-errors', r.errors)
FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[], %(delays)s::float8[],
            %(errors)s::text[]::jsonb[])
     AS r(msg_id, read_ct, delay_s, errors)
WHERE m.msg_id = ANY(%(msg_ids)s::bigint[])  -- an index path, not a scan of the table
  AND m.msg_id = r.msg_id AND m.read_ct = r.read_ct
