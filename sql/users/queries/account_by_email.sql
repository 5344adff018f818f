SELECT user_id, email, role, created_at, password_hash, token_version
FROM users.account
WHERE email = %(email)s
