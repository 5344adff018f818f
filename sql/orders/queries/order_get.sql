SELECT order_id, customer_id, status, reason, total_cents, created_at, updated_at
FROM orders."order"
WHERE order_id = %(order_id)s
