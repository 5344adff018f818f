SELECT status, lines
FROM products.reservation
WHERE order_id = %(order_id)s
FOR UPDATE
