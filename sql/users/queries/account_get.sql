SELECT user_id, email, role, created_at
FROM users.account
WHERE user_id = %(user_id)s
