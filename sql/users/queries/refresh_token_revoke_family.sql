DELETE FROM users.refresh_token
WHERE family_id = %(family_id)s
