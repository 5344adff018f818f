-- What became of the orders, for the report; each order's card is the one its client
-- sent (orders keeps no card token past pending). Money is figures_payments.sql's.
SELECT count(*),
       count(*) FILTER (WHERE status = 'confirmed'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'out of stock%'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'payment declined%'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'timed out%'
                        AND p.card = 'tok_timeout'),
       count(*) FILTER (WHERE status = 'cancelled' AND reason LIKE 'timed out%'
                        AND p.card IS DISTINCT FROM 'tok_timeout'),
       count(*) FILTER (WHERE status NOT IN ('confirmed', 'cancelled'))
FROM orders."order" o
LEFT JOIN chaos.placed p USING (order_id)
