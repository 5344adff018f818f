-- A new order, its lines and its first event in one statement: a placement's three
-- inserts in one round trip. The order waits for its stock until step_deadline
-- (deadlines.py expires it); lines are numbered in the order the customer gave them,
-- at the prices the customer was quoted. The lines' foreign key is checked at the
-- statement's end, when the order is there.
WITH placed AS (
    INSERT INTO orders."order" (customer_id, total_cents, card_token, step_deadline)
    VALUES (%(customer_id)s, %(total_cents)s, %(card_token)s,
            now() + make_interval(secs => %(step_timeout_s)s))
    RETURNING order_id
),
line AS (
    INSERT INTO orders.order_line
        (order_id, line_no, product_id, name, quantity, unit_price_cents)
    SELECT placed.order_id, l.line_no, l.product_id, l.name, l.quantity, l.unit_price_cents
    FROM placed,
         unnest(%(product_ids)s::uuid[], %(names)s::text[], %(quantities)s::integer[],
                %(unit_prices)s::bigint[])
         WITH ORDINALITY AS l(product_id, name, quantity, unit_price_cents, line_no)
),
event AS (
    INSERT INTO orders.order_event (order_id, kind, status, detail)
    SELECT placed.order_id, %(kind)s, %(status)s, %(detail)s
    FROM placed
)
SELECT order_id FROM placed
