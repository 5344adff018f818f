SELECT request_hash, status, body
FROM {table}
WHERE caller = %(caller)s AND key = %(key)s
