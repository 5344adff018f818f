-- Acknowledges messages still held by the claims that took them: a row whose read_ct
-- moved on was claimed again (by another worker, or another pgmq client's read)
-- after this lease ran out, and is the new holder's to acknowledge.
-- The = ANY gives the planner an index path: joined to unnest() alone it hashed the
-- ids and scanned the whole queue table on every acknowledgement.
DELETE FROM {queue} m
WHERE m.msg_id = ANY(%(msg_ids)s::bigint[])
  AND (m.msg_id, m.read_ct) IN (SELECT * FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[]))
