-- The token and its account as they are now: a refresh reflects the current role and
-- token version, and finds nothing for a deleted account (its tokens went with it).
SELECT r.user_id, r.family_id, r.rotated_at IS NOT NULL AS rotated,
       r.expires_at <= now() AS expired, a.role, a.token_version
FROM users.refresh_token r
JOIN users.account a USING (user_id)
WHERE r.token_hash = %(token_hash)s
FOR UPDATE OF r
