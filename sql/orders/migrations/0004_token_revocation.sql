-- Tokens to refuse before they expire, from the users service's user.changed events:
-- a token of user_id whose version is below min_version (any token, once deleted).
-- Read by the auth guard on every request by primary key; one row per changed user.
CREATE TABLE orders.token_revocation (
    user_id     text PRIMARY KEY,
    min_version bigint NOT NULL CHECK (min_version >= 1),
    deleted     boolean NOT NULL DEFAULT false,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON orders.token_revocation TO orders_svc;
