-- Worker processes that reported in, the most recently started first; `alive` when
-- they beat within %(alive_within_s)s seconds and every loop of theirs was running.
SELECT name, hostname, pid, queues, started_at, beat_at, last_claim_at, listening,
       loops_alive AND beat_at >= coalesce(%(now)s::timestamptz, clock_timestamp())
                                  - make_interval(secs => %(alive_within_s)s) AS alive
FROM pgcourier.worker
ORDER BY started_at DESC
