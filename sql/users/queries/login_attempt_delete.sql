-- A refused (throttled) attempt is not a guess: it does not extend the lockout.
DELETE FROM users.login_attempt WHERE attempt_id = %(attempt_id)s
