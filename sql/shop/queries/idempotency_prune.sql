-- In batches, oldest first, along the created_at index: never one long delete.
DELETE FROM {table}
WHERE (caller, key) IN (
    SELECT caller, key FROM {table}
    WHERE created_at < now() - make_interval(secs => %(retention_s)s)
    ORDER BY created_at
    LIMIT %(batch)s
)
