-- Units the confirmed orders bought, by product.
SELECT l.product_id::text, sum(l.quantity)::bigint
FROM orders.order_line l JOIN orders."order" o USING (order_id)
WHERE o.status = 'confirmed'
GROUP BY l.product_id
