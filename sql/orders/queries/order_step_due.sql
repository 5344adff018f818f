-- Orders whose saga step is past its deadline (at %(now)s, the clock when NULL),
-- oldest deadline first, locked; one that a reply's handler holds is skipped and
-- found again on the next pass, with whatever deadline the reply left it.
SELECT order_id, status, customer_id, total_cents, card_token
FROM orders."order"
WHERE step_deadline <= coalesce(%(now)s::timestamptz, now())
ORDER BY step_deadline
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
