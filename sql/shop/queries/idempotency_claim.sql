-- Holds the key for this request's transaction: a concurrent request with the same
-- key waits here until that transaction ends, then finds the row (or takes the key
-- if the first one rolled back). No row returned: the key was used before.
INSERT INTO {table} (caller, key, request_hash)
VALUES (%(caller)s, %(key)s, %(request_hash)s)
ON CONFLICT (caller, key) DO NOTHING
RETURNING true
