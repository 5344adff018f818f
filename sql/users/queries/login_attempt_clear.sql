-- The right password: the account's failures are forgiven, from every address.
DELETE FROM users.login_attempt WHERE email = %(email)s
