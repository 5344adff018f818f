-- pgbench script: one ~100-byte message per transaction, as pgmq.send inserts it.
\set i random(1, 1000000000)
INSERT INTO ceiling.q (vt, message)
SELECT clock_timestamp(),
       jsonb_build_object(
           'order_id', s.i, 'customer', 'cust-' || lpad(mod(s.i, 99991)::text, 5, '0'),
           'amount_cents', 1999 + mod(s.i, 5000), 'currency', 'EUR', 'note', 'gift wrap')
FROM (SELECT CAST(:i AS bigint) AS i) AS s;
