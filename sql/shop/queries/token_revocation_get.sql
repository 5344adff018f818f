SELECT min_version, deleted
FROM {table}
WHERE user_id = %(user_id)s
