-- Dead rows in a queue table (left by acknowledgements and claims until vacuumed),
-- and whether the current role may vacuum it (owners and superusers may).
SELECT coalesce(s.n_dead_tup, 0) AS dead_rows,
       pg_has_role(current_user, c.relowner, 'USAGE') AS may_vacuum
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = to_regclass(%(table)s)
