INSERT INTO products.reservation (order_id, lines, status)
VALUES (%(order_id)s, %(lines)s, 'reserved')
