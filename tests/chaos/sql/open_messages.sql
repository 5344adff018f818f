-- Messages on any queue (ready, in flight or delayed: a retry waiting out its backoff,
-- or a saga.timeout an older version sent, still has to come due and be handled) and
-- rows its links still keep: what the drain waits for (in every database).
SELECT (SELECT coalesce(sum(ready + in_flight + delayed), 0) FROM pgcourier.queues),
       (SELECT coalesce(sum(retained), 0) FROM pgcourier.links WHERE direction = 'out')
