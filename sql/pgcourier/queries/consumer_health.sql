-- How a queue's consumers are doing, for a health check: live workers (beat within
-- %(alive_within_s)s seconds, every loop running) that consume it, when one of them
-- last claimed, and for how long the message that has been ready longest has waited
-- (by its vt: one probe of the vt index, however long the queue).
WITH at AS (SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) AS at)
SELECT
    (SELECT count(*) FROM pgcourier.worker w
     WHERE %(queue_name)s = ANY(w.queues) AND w.loops_alive
       AND w.beat_at >= at.at - make_interval(secs => %(alive_within_s)s)) AS live_workers,
    (SELECT max(w.last_claim_at) FROM pgcourier.worker w
     WHERE %(queue_name)s = ANY(w.queues)) AS last_claim_at,
    (SELECT extract(epoch FROM at.at - q.vt)::float8
     FROM {queue} q WHERE q.vt <= at.at ORDER BY q.vt LIMIT 1) AS oldest_ready_age_s
FROM at
