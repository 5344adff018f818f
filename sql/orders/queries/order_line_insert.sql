-- All lines of one order in one statement, numbered in the order the customer gave
-- them; prices are the ones the customer was quoted.
INSERT INTO orders.order_line (order_id, line_no, product_id, name, quantity, unit_price_cents)
SELECT %(order_id)s, l.line_no, l.product_id, l.name, l.quantity, l.unit_price_cents
FROM unnest(%(product_ids)s::uuid[], %(names)s::text[], %(quantities)s::integer[],
            %(unit_prices)s::bigint[])
     WITH ORDINALITY AS l(product_id, name, quantity, unit_price_cents, line_no)
