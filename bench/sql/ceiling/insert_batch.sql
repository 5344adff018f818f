-- pgbench script: 100 ~100-byte messages per transaction, in one INSERT ... SELECT.
\set i random(1, 1000000000)
INSERT INTO ceiling.q (vt, message)
SELECT clock_timestamp(),
       jsonb_build_object(
           'order_id', g, 'customer', 'cust-' || lpad(mod(g, 99991)::text, 5, '0'),
           'amount_cents', 1999 + mod(g, 5000), 'currency', 'EUR', 'note', 'gift wrap')
FROM generate_series(CAST(:i AS bigint), CAST(:i AS bigint) + 99) AS g;
