-- The card provider's own ledger agrees with payments: no order's card captured twice,
-- and every capture is a payment captured (or refunded since) for the same amount,
-- so no customer was charged for an order the shop does not know it was paid for.
WITH ledger AS (
    SELECT order_id, count(*) AS captures, sum(amount_cents) AS cents
    FROM card_provider.charge
    WHERE outcome = 'captured'
    GROUP BY order_id
), paid AS (
    SELECT order_id, status, amount_cents
    FROM payments.payment
    WHERE status IN ('captured', 'refunded')
), bad AS (
    SELECT format('%s: provider captured %s time(s) for %s cents; payment %s for %s cents',
                  order_id, coalesce(l.captures, 0), l.cents, coalesce(p.status, 'none'),
                  p.amount_cents) AS what
    FROM ledger l
    FULL JOIN paid p USING (order_id)
    WHERE l.captures IS DISTINCT FROM 1 OR p.status IS NULL OR l.cents <> p.amount_cents
)
SELECT count(*), array_to_string((array_agg(what))[1:3], '; ') FROM bad
