-- Sessions: access tokens live minutes and are renewed with a refresh token that this
-- service stores (hashed) and can revoke. An account's token version goes up on every
-- role change and logout everywhere: access tokens carry the version they were issued
-- at, and every service refuses one below the version it knows (user.changed events).
ALTER TABLE users.account
    ADD COLUMN token_version bigint NOT NULL DEFAULT 1 CHECK (token_version >= 1);

CREATE TABLE users.refresh_token (
    -- SHA-256 of the token (32 random bytes): the table alone refreshes nothing.
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users.account ON DELETE CASCADE,
    -- One sign-in's chain of rotations. A rotated token presented again was copied:
    -- the whole chain is revoked, the thief's copy and the owner's alike.
    family_id  uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_token_user ON users.refresh_token (user_id);
CREATE INDEX refresh_token_family ON users.refresh_token (family_id);

-- The same table every service keeps (see sql/products/migrations/0004): users writes
-- its own in the transaction of the change, the others from user.changed.
CREATE TABLE users.token_revocation (
    user_id     text PRIMARY KEY,
    min_version bigint NOT NULL CHECK (min_version >= 1),
    deleted     boolean NOT NULL DEFAULT false,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON users.refresh_token TO users_svc;
GRANT SELECT, INSERT, UPDATE ON users.token_revocation TO users_svc;
