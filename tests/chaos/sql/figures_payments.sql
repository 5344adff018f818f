-- The money: cents captured (by payments captured, or refunded since) and refunded.
SELECT coalesce(sum(amount_cents) FILTER (WHERE status IN ('captured', 'refunded')), 0),
       coalesce(sum(refunded_cents), 0)
FROM payments.payment
