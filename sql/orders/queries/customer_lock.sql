-- Serialises one customer's placements until their transactions end, so that each
-- counts the orders of the one before it (order_open_count, a statement of its own:
-- its snapshot must be taken after the lock is granted).
SELECT pg_advisory_xact_lock(hashtextextended('orders.customer:' || %(customer_id)s, 0))
