UPDATE {table}
SET status = %(status)s, body = %(body)s
WHERE caller = %(caller)s AND key = %(key)s
