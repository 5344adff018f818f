-- Every payment (for the checks comparing it with the orders).
SELECT order_id::text, status, amount_cents, refunded_cents FROM payments.payment
