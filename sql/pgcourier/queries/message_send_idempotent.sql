-- Inserts a batch of messages; rows whose idempotency key is already in the queue
-- are skipped, so a retried send is a no-op while the first is retained.
-- The arrays go in binary: as text, every quote in the JSON would be escaped.
INSERT INTO {queue} (vt, message, headers)
SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => t.delay_s),
       t.message, t.headers
FROM unnest(%(messages)b::text[]::jsonb[], %(headers)b::text[]::jsonb[], %(delays)b::float8[])
     WITH ORDINALITY AS t(message, headers, delay_s, position)
ORDER BY t.position
-- No conflict target: the idempotency index is the only unique index a send can hit
-- (msg_id is generated), and naming it would need SELECT on every row's headers,
-- which a role that may only send to the queue does not have.
ON CONFLICT DO NOTHING
RETURNING msg_id
