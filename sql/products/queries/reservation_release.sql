UPDATE products.reservation
SET status = 'released', updated_at = now()
WHERE order_id = %(order_id)s
