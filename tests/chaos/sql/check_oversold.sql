-- Products that sold more units than they had, or whose stock went below zero.
WITH sold AS (
    SELECT l.product_id, sum(l.quantity) AS units
    FROM orders.order_line l JOIN orders."order" o USING (order_id)
    WHERE o.status = 'confirmed'
    GROUP BY l.product_id
)
SELECT count(*),
       array_to_string((array_agg(format('%s: had %s, sold %s, stock now %s',
                                         i.product_id, i.stock, coalesce(s.units, 0), p.stock)))[1:3], '; ')
FROM chaos.product_initial i
JOIN products.product p USING (product_id)
LEFT JOIN sold s USING (product_id)
WHERE p.stock < 0 OR coalesce(s.units, 0) > i.stock
