INSERT INTO orders."order" (customer_id, total_cents, card_token)
VALUES (%(customer_id)s, %(total_cents)s, %(card_token)s)
RETURNING order_id
