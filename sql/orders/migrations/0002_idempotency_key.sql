-- Idempotency-Key of creating requests: the first answer per (caller, key), written in
-- the transaction that created something, so a retry finds it iff the creation
-- committed. Rows older than a day are pruned by the HTTP process.
CREATE TABLE orders.idempotency_key (
    caller       text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    -- HMAC of method, path and body: a retry must be the same request.
    request_hash text NOT NULL,
    -- Set before the transaction commits; never seen unset by another request.
    status       smallint,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_key_created_at ON orders.idempotency_key (created_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON orders.idempotency_key TO orders_svc;
