-- The payments database's part of "no payment taken twice": more than one payment row
-- for an order, or more refunded than charged (check_reported_twice.sql is the orders
-- database's part).
WITH twice AS (
    SELECT order_id::text AS order_id, 'payments' AS seen
    FROM payments.payment
    GROUP BY order_id
    HAVING count(*) > 1 OR sum(refunded_cents) > max(amount_cents)
)
SELECT count(*), array_to_string((array_agg(format('%s (%s)', order_id, seen)))[1:3], '; ')
FROM twice
