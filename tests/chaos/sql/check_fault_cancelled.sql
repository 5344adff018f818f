-- Sagas a fault cancelled: a good card, and a step that timed out. Stock refusals
-- answer at once (stock.rejected), so no timeout is ever the shelf's doing. The card
-- is the one its client sent (orders keeps no card token past pending).
SELECT count(*) FILTER (WHERE p.card = 'tok_visa'),
       format('%s with a good card, %s with a declining card; by step: %s',
              count(*) FILTER (WHERE p.card = 'tok_visa'),
              count(*) FILTER (WHERE p.card = 'tok_decline'),
              coalesce(string_agg(DISTINCT o.reason, ', '), 'none'))
FROM orders."order" o
LEFT JOIN chaos.placed p USING (order_id)
WHERE o.status = 'cancelled' AND o.reason LIKE 'timed out%'
  AND p.card IS DISTINCT FROM 'tok_timeout'
