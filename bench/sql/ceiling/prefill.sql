-- Fills the queue before a claiming run so that it never runs dry: as many messages
-- as asked for, of the shape and size the scripts insert, all due now.
INSERT INTO ceiling.q (vt, message)
SELECT clock_timestamp(),
       jsonb_build_object(
           'order_id', g, 'customer', 'cust-' || lpad(mod(g, 99991)::text, 5, '0'),
           'amount_cents', 1999 + mod(g, 5000), 'currency', 'EUR', 'note', 'gift wrap')
FROM generate_series(1, %(rows)s) AS g
