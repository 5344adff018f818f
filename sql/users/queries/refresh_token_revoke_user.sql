DELETE FROM users.refresh_token
WHERE user_id = %(user_id)s
