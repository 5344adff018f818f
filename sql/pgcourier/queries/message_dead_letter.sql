-- Moves messages to the dead letters with every attempt's error, in one statement so
-- nothing is lost or doubled. Fenced: only messages still held by the claims that
-- took them (same read_ct) are moved. `errors` is the whole history, as the worker
-- read it from the claimed message plus the last attempt's error.
WITH failed AS (
    SELECT *
    FROM unnest(%(msg_ids)s::bigint[], %(read_cts)s::int[], %(attempts)s::int[],
                %(errors)s::text[]::jsonb[])
         AS r(msg_id, read_ct, attempts, errors)
),
removed AS (
    DELETE FROM {queue} m USING failed
    WHERE m.msg_id = ANY(%(msg_ids)s::bigint[])  -- an index path, not a scan of the table
      AND m.msg_id = failed.msg_id AND m.read_ct = failed.read_ct
    RETURNING m.msg_id, m.enqueued_at, m.message, m.headers, m.sender, failed.attempts, failed.errors
)
INSERT INTO pgcourier.dead_letter (queue_name, msg_id, message, headers, sender, enqueued_at, attempts, errors)
SELECT %(queue_name)s, msg_id, message,
       CASE jsonb_typeof(headers) WHEN 'object' THEN headers - 'x-pgcourier-errors' ELSE headers END,
       sender, enqueued_at, attempts, errors
FROM removed
