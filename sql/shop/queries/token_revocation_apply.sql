-- Records a user.changed event: versions only go up and a deletion stays, so a late
-- or redelivered event cannot bring a revoked token back.
INSERT INTO {table} AS t (user_id, min_version, deleted)
VALUES (%(user_id)s, %(min_version)s, %(deleted)s)
ON CONFLICT (user_id) DO UPDATE
SET min_version = greatest(t.min_version, EXCLUDED.min_version),
    deleted = t.deleted OR EXCLUDED.deleted,
    changed_at = now()
