-- Inserts a batch of messages; rows whose idempotency key is already in the queue
-- are skipped, so a retried send is a no-op while the first is retained.
-- The arrays go in binary: as text, every quote in the JSON would be escaped.
INSERT INTO {queue} (vt, message, headers)
SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => t.delay_s),
       t.message, t.headers
FROM unnest(%(messages)b::text[]::jsonb[], %(headers)b::text[]::jsonb[], %(delays)b::float8[])
     WITH ORDINALITY AS t(message, headers, delay_s, position)
ORDER BY t.position
ON CONFLICT ((headers ->> 'x-pgcourier-idempotency-key')) WHERE headers ? 'x-pgcourier-idempotency-key'
DO NOTHING
RETURNING msg_id
