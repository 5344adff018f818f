-- The customer's orders the saga has not finished (the cap on them); run under
-- customer_lock.
SELECT count(*)
FROM orders."order"
WHERE customer_id = %(customer_id)s AND status IN ('pending', 'awaiting_payment')
