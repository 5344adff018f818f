-- Money conserved to the cent: captured minus refunded is what the confirmed orders cost.
WITH held AS (
    SELECT coalesce(sum(amount_cents) FILTER (WHERE status IN ('captured', 'refunded')), 0)
           - coalesce(sum(refunded_cents), 0) AS cents
    FROM payments.payment
), sold AS (
    SELECT coalesce(sum(total_cents), 0) AS cents FROM orders."order" WHERE status = 'confirmed'
)
SELECT abs(held.cents - sold.cents),
       format('captured - refunded = %s cents; confirmed orders total %s cents', held.cents, sold.cents)
FROM held, sold
