-- Run at each sign-in: a user's expired tokens go, so the table holds live sessions.
DELETE FROM users.refresh_token
WHERE user_id = %(user_id)s AND expires_at <= now()
