-- No row back means the email is taken (also when two requests race for it).
INSERT INTO users.account (email, password_hash, role)
VALUES (%(email)s, %(password_hash)s, %(role)s)
ON CONFLICT (email) DO NOTHING
RETURNING user_id, email, role, created_at
