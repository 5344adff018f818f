-- Messages ready or in flight, and rows its links still keep: what the drain waits for
-- (in every database).
SELECT (SELECT coalesce(sum(ready + in_flight), 0) FROM pgcourier.queues),
       (SELECT coalesce(sum(retained), 0) FROM pgcourier.links WHERE direction = 'out')
