-- Login attempts, for throttling password guessing per account and per client address.
-- A row is written before the password is checked (so a burst of parallel guesses is
-- counted as it arrives), kept if the password was wrong, deleted if it was right (with
-- every earlier failure of the account) or if the attempt was refused as throttled.
-- Rows older than the throttling window are pruned as failures are recorded.
CREATE TABLE users.login_attempt (
    attempt_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Normalised as typed: unknown accounts are throttled like real ones, so a 429 does
    -- not tell whether an account exists.
    email      text NOT NULL CHECK (length(email) <= 254),
    address    text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX login_attempt_email ON users.login_attempt (email, at);
CREATE INDEX login_attempt_address ON users.login_attempt (address, at);
CREATE INDEX login_attempt_at ON users.login_attempt (at);

GRANT SELECT, INSERT, DELETE ON users.login_attempt TO users_svc;
