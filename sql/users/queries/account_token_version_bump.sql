UPDATE users.account
SET token_version = token_version + 1
WHERE user_id = %(user_id)s
RETURNING token_version
