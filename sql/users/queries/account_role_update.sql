-- Refuses (no row back) to demote the last admin. Every admin row is locked, in one
-- order, so two admins demoting each other at once queue up instead of deadlocking,
-- and the second then sees the first's demotion. The token version goes up: tokens
-- issued with the old role are refused everywhere once user.changed is applied.
WITH admins AS (
    SELECT user_id
    FROM users.account
    WHERE role = 'admin'
    ORDER BY user_id
    FOR UPDATE
)
UPDATE users.account
SET role = %(role)s,
    token_version = token_version + 1
WHERE user_id = %(user_id)s
  AND (
      %(role)s = 'admin'
      OR role <> 'admin'
      OR EXISTS (SELECT 1 FROM admins WHERE admins.user_id <> %(user_id)s)
  )
RETURNING user_id, email, role, created_at, token_version
