-- What became of the orders, for the report.
SELECT count(*),
       count(*) FILTER (WHERE status = 'confirmed'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'out of stock%'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'payment declined%'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'timed out%'
                        AND card_token = 'tok_timeout'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'timed out%'
                        AND card_token <> 'tok_timeout'),
       count(*) FILTER (WHERE status NOT IN ('confirmed', 'cancelled')),
       (SELECT coalesce(sum(amount_cents) FILTER (WHERE status IN ('captured', 'refunded')), 0)
        FROM payments.payment),
       (SELECT coalesce(sum(refunded_cents), 0) FROM payments.payment)
FROM orders."order"
