-- The attempts within the window, this one included (run after it committed, so that
-- of two parallel attempts at least the later one counts the other), and when each
-- key's count would be back under its limit without this attempt: when the limit-th
-- newest other attempt leaves the window.
WITH recent AS (
    SELECT attempt_id, email, address, at
    FROM users.login_attempt
    WHERE (email = %(email)s OR address = %(address)s)
      AND at >= clock_timestamp() - make_interval(secs => %(window_s)s)
)
SELECT
    (SELECT count(*) FROM recent WHERE email = %(email)s),
    (SELECT at FROM recent WHERE email = %(email)s AND attempt_id <> %(attempt_id)s
     ORDER BY at DESC OFFSET %(account_limit)s - 1 LIMIT 1)
        + make_interval(secs => %(window_s)s) - clock_timestamp(),
    (SELECT count(*) FROM recent WHERE address = %(address)s),
    (SELECT at FROM recent WHERE address = %(address)s AND attempt_id <> %(attempt_id)s
     ORDER BY at DESC OFFSET %(address_limit)s - 1 LIMIT 1)
        + make_interval(secs => %(window_s)s) - clock_timestamp()
