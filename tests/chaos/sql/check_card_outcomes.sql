-- A declined card or a provider that never answered never confirms an order. The card
-- is the one its client sent (orders keeps no card token past pending).
SELECT count(*), array_to_string((array_agg(format('%s (%s)', o.order_id, p.card)))[1:3], '; ')
FROM orders."order" o
JOIN chaos.placed p USING (order_id)
WHERE o.status = 'confirmed' AND p.card IN ('tok_decline', 'tok_timeout')
