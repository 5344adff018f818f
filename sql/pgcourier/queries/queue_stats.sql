-- One row per pgmq queue: ready, in flight, delayed and dead counts, and the age of
-- the oldest ready message (NULL when nothing is ready). See pgcourier.queue_stats.
SELECT queue, ready, in_flight, delayed, dead, oldest_ready_age_s
FROM pgcourier.queues
ORDER BY queue
