-- Refuses (no row back) to delete the last admin, locking the admins as
-- account_role_update does. Refresh tokens go with the account (ON DELETE CASCADE).
WITH admins AS (
    SELECT user_id
    FROM users.account
    WHERE role = 'admin'
    ORDER BY user_id
    FOR UPDATE
)
DELETE FROM users.account
WHERE user_id = %(user_id)s
  AND (role <> 'admin' OR EXISTS (SELECT 1 FROM admins WHERE admins.user_id <> %(user_id)s))
RETURNING user_id, token_version
