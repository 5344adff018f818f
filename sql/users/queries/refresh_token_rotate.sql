-- Kept, marked, until it expires: presented again, it betrays a copy.
UPDATE users.refresh_token
SET rotated_at = now()
WHERE token_hash = %(token_hash)s
