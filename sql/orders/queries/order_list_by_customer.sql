SELECT order_id, customer_id, status, reason, total_cents, created_at, updated_at
FROM orders."order"
WHERE customer_id = %(customer_id)s
ORDER BY created_at DESC, order_id
LIMIT %(limit)s
