SELECT user_id, email, role, created_at, password_hash
FROM users.account
WHERE email = %(email)s
