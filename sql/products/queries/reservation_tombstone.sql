-- A cancellation that arrives before the order: remember it, so that a late
-- order.placed is refused. Returns no row when the order already has a reservation
-- (after waiting for a concurrent one to commit).
INSERT INTO products.reservation (order_id, lines, status)
VALUES (%(order_id)s, '[]'::jsonb, 'released')
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
