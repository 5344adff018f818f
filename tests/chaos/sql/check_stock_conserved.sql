-- Per product: what left the shelf (initial - stock) is what the confirmed orders
-- bought, and is what products still holds as reserved; every other unit came back.
WITH sold AS (
    SELECT l.product_id, sum(l.quantity) AS units
    FROM orders.order_line l JOIN orders."order" o USING (order_id)
    WHERE o.status = 'confirmed'
    GROUP BY l.product_id
), held AS (
    SELECT (line ->> 'product_id')::uuid AS product_id, sum((line ->> 'quantity')::int) AS units
    FROM products.reservation r, jsonb_array_elements(r.lines) AS line
    WHERE r.status = 'reserved'
    GROUP BY 1
)
SELECT count(*),
       array_to_string((array_agg(format('%s: had %s, stock %s, sold %s, reserved %s',
                                         i.product_id, i.stock, p.stock, coalesce(s.units, 0),
                                         coalesce(h.units, 0))))[1:3], '; ')
FROM chaos.product_initial i
JOIN products.product p USING (product_id)
LEFT JOIN sold s USING (product_id)
LEFT JOIN held h USING (product_id)
WHERE i.stock - p.stock <> coalesce(s.units, 0) OR coalesce(h.units, 0) <> coalesce(s.units, 0)
