INSERT INTO users.refresh_token (token_hash, user_id, family_id, expires_at)
VALUES (%(token_hash)s, %(user_id)s, %(family_id)s, now() + make_interval(secs => %(ttl_s)s))
