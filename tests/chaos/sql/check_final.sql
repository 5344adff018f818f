-- Every accepted order exists and is confirmed or cancelled; so is every other order.
WITH open AS (
    SELECT format('%s %s', c.order_id, coalesce(o.status, 'missing')) AS what
    FROM chaos.placed c LEFT JOIN orders."order" o USING (order_id)
    WHERE c.order_id IS NOT NULL
      AND (o.order_id IS NULL OR o.status NOT IN ('confirmed', 'cancelled'))
    UNION
    SELECT format('%s %s', order_id, status) FROM orders."order"
    WHERE status NOT IN ('confirmed', 'cancelled')
)
SELECT count(*), array_to_string((array_agg(what))[1:3], '; ') FROM open
