-- Acknowledges messages still held by the claims that took them: a row whose read_ct
-- moved on was claimed again (by another worker, or another pgmq client's read)
-- after this lease ran out, and is the new holder's to acknowledge.
DELETE FROM {queue} m
USING unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]) AS r(msg_id, read_ct)
WHERE m.msg_id = r.msg_id AND m.read_ct = r.read_ct
