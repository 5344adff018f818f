SELECT user_id, email, role, created_at
FROM users.account
ORDER BY created_at, user_id
LIMIT %(limit)s OFFSET %(offset)s
