SELECT product_id, name, quantity, unit_price_cents
FROM orders.order_line
WHERE order_id = %(order_id)s
ORDER BY line_no
