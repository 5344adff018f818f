-- A payment taken or given back twice: more than one payment row for an order, more
-- refunded than charged, or the saga told twice of a capture or a refund.
WITH twice AS (
    SELECT order_id::text AS order_id, 'payments' AS seen
    FROM payments.payment
    GROUP BY order_id
    HAVING count(*) > 1 OR sum(refunded_cents) > max(amount_cents)
    UNION ALL
    SELECT order_id::text, kind
    FROM orders.order_event
    WHERE kind IN ('payment.captured', 'payment.refunded')
    GROUP BY order_id, kind
    HAVING count(*) > 1
)
SELECT count(*), array_to_string((array_agg(format('%s (%s)', order_id, seen)))[1:3], '; ')
FROM twice
