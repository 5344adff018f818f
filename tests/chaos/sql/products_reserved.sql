-- Units products still holds as reserved for an order, by product.
SELECT line ->> 'product_id', sum((line ->> 'quantity')::int)::bigint
FROM products.reservation r, jsonb_array_elements(r.lines) AS line
WHERE r.status = 'reserved'
GROUP BY 1
