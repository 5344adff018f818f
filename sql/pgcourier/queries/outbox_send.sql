-- Writes a batch of messages for a queue of another database (a remote queue) to the
-- outbox, in the caller's transaction; the link delivers them (migration 0004).
-- The trigger on the outbox stamps the target node; the sender is stamped as for
-- any send.
INSERT INTO pgcourier.outbox (queue_name, message, headers, delay_s)
SELECT %(queue)s, t.message, t.headers, t.delay_s
FROM unnest(%(messages)b::text[]::jsonb[], %(headers)b::text[]::jsonb[], %(delays)b::float8[])
     WITH ORDINALITY AS t(message, headers, delay_s, position)
ORDER BY t.position
RETURNING id
