-- The users service: accounts and their roles. Passwords are stored only as argon2 hashes.
CREATE SCHEMA users;

CREATE TABLE users.account (
    user_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Normalised by the service; the check keeps a second writer from creating
    -- "Bob@x" next to "bob@x" and slipping past the unique constraint.
    email         text NOT NULL UNIQUE CHECK (email = lower(btrim(email)) AND email LIKE '_%@_%'),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    role          text NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA users TO users_svc;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA users TO users_svc;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA users TO users_svc;
