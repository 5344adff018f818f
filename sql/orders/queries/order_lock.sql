-- The order a saga message is about, locked so that two messages for the same order
-- (a reply and a timeout, say) are decided one after the other.
SELECT status, customer_id, total_cents, card_token
FROM orders."order"
WHERE order_id = %(order_id)s
FOR UPDATE
