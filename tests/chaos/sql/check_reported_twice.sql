-- The orders database's part of "no payment taken twice": the saga told twice of a
-- capture or a refund of one order.
WITH twice AS (
    SELECT order_id::text AS order_id, kind AS seen
    FROM orders.order_event
    WHERE kind IN ('payment.captured', 'payment.refunded')
    GROUP BY order_id, kind
    HAVING count(*) > 1
)
SELECT count(*), array_to_string((array_agg(format('%s (%s)', order_id, seen)))[1:3], '; ')
FROM twice
