-- Claims the order for this payment. A concurrent transaction inserting the same
-- order waits here for the first to commit, then gets no row: one payment per order.
INSERT INTO payments.payment (order_id, customer_id, amount_cents, status, reason)
VALUES (%(order_id)s, %(customer_id)s, %(amount_cents)s, %(status)s, %(reason)s)
ON CONFLICT (order_id) DO NOTHING
RETURNING payment_id
