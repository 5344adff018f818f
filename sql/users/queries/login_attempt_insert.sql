-- An attempt counts from before its password is checked; old attempts go first.
WITH pruned AS (
    DELETE FROM users.login_attempt
    WHERE at < clock_timestamp() - make_interval(secs => %(window_s)s)
)
INSERT INTO users.login_attempt (email, address)
VALUES (%(email)s, %(address)s)
RETURNING attempt_id
