-- A new order waits for its stock until step_deadline (deadlines.py expires it).
INSERT INTO orders."order" (customer_id, total_cents, card_token, step_deadline)
VALUES (%(customer_id)s, %(total_cents)s, %(card_token)s,
        now() + make_interval(secs => %(step_timeout_s)s))
RETURNING order_id
