-- Renews the lease of messages a live worker is still handling; a message that was
-- reclaimed by someone else since (its read_ct moved on) is left alone.
UPDATE {queue} m
SET vt = coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => %(vt_s)s)
FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) AS r(msg_id, read_ct)
WHERE m.msg_id = ANY(%(msg_ids)s::bigint[])  -- an index path, not a scan of the table
  AND m.msg_id = r.msg_id AND m.read_ct = r.read_ct
RETURNING m.msg_id
