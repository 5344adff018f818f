-- Moves messages that used up their attempts to the dead letters, with every
-- attempt's error, in one statement so nothing is lost or doubled.
WITH failed AS (
    SELECT * FROM unnest(%(msg_ids)s::bigint[], %(errors)s::text[]::jsonb[]) AS r(msg_id, error)
),
removed AS (
    DELETE FROM {queue} m USING failed
    WHERE m.msg_id = failed.msg_id
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message, m.headers, failed.error
)
INSERT INTO pgcourier.dead_letter (queue_name, msg_id, message, headers, enqueued_at, attempts, errors)
SELECT %(queue_name)s, msg_id, message, coalesce(headers, '{{}}'::jsonb) - 'pgcourier_errors',
       enqueued_at, read_ct, coalesce(headers -> 'pgcourier_errors', '[]'::jsonb) || error
FROM removed
