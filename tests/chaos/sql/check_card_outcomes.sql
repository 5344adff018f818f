-- A declined card or a provider that never answered never confirms an order.
SELECT count(*), array_to_string((array_agg(format('%s (%s)', order_id, card_token)))[1:3], '; ')
FROM orders."order"
WHERE status = 'confirmed' AND card_token IN ('tok_decline', 'tok_timeout')
