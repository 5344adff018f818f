-- An order created twice: an order no client was given (a retry created another), or
-- one Idempotency-Key answered with two different orders.
WITH unknown AS (
    SELECT o.order_id::text AS what FROM orders."order" o
    WHERE NOT EXISTS (SELECT 1 FROM chaos.seen s WHERE s.order_id = o.order_id)
), split AS (
    SELECT 'key ' || key AS what FROM chaos.seen GROUP BY key HAVING count(DISTINCT order_id) > 1
), found AS (SELECT what FROM unknown UNION ALL SELECT what FROM split)
SELECT count(*), array_to_string((array_agg(what))[1:3], '; ') FROM found
