-- The orders service's own record of Idempotency-Keys: as many orders as keys it
-- answered 202, and each key's stored answer names the order the client was given.
WITH mismatch AS (
    SELECT format('key %s: client has %s, stored %s', c.key, c.order_id,
                  coalesce(k.body ->> 'order_id', 'nothing')) AS what
    FROM chaos.placed c
    LEFT JOIN orders.idempotency_key k ON k.key = c.key
    WHERE c.order_id IS NOT NULL
      AND (k.key IS NULL OR k.body ->> 'order_id' IS DISTINCT FROM c.order_id::text)
)
SELECT abs((SELECT count(*) FROM orders."order")
           - (SELECT count(*) FROM orders.idempotency_key WHERE status = 202))
       + (SELECT count(*) FROM mismatch),
       format('%s orders, %s keys answered 202; %s',
              (SELECT count(*) FROM orders."order"),
              (SELECT count(*) FROM orders.idempotency_key WHERE status = 202),
              coalesce((SELECT array_to_string((array_agg(what))[1:3], '; ') FROM mismatch), ''))
