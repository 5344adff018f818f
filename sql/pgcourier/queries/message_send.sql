-- Inserts a batch of messages without idempotency keys (message_send_idempotent
-- is the one with ON CONFLICT). The arrays go in binary: as text, every quote in
-- the JSON would be escaped.
INSERT INTO {queue} (vt, message, headers)
SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) + make_interval(secs => t.delay_s),
       t.message, t.headers
FROM unnest(%(messages)b::text[]::jsonb[], %(headers)b::text[]::jsonb[], %(delays)b::float8[])
     WITH ORDINALITY AS t(message, headers, delay_s, position)
ORDER BY t.position
RETURNING msg_id
