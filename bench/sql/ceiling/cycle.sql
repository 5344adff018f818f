-- pgbench script: a full cycle, insert 100 then claim and delete 100, each statement
-- committed on its own as a producer's send and a consumer's claim would be.
-- pgbench counts the pair as one transaction; it moves 100 messages through.
\set i random(1, 1000000000)
INSERT INTO ceiling.q (vt, message)
SELECT clock_timestamp(),
       jsonb_build_object(
           'order_id', g, 'customer', 'cust-' || lpad(mod(g, 99991)::text, 5, '0'),
           'amount_cents', 1999 + mod(g, 5000), 'currency', 'EUR', 'note', 'gift wrap')
FROM generate_series(CAST(:i AS bigint), CAST(:i AS bigint) + 99) AS g;
DELETE FROM ceiling.q
WHERE msg_id IN (
    SELECT msg_id FROM ceiling.q
    WHERE vt <= clock_timestamp()
    ORDER BY msg_id
    FOR UPDATE SKIP LOCKED
    LIMIT 100
)
RETURNING msg_id, read_ct, enqueued_at, vt, message, headers;
