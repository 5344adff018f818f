-- Nothing ready or in flight on any queue (delayed saga timeouts may still wait).
SELECT coalesce(sum(ready + in_flight), 0),
       string_agg(format('%s: %s ready, %s in flight', queue, ready, in_flight), '; ')
           FILTER (WHERE ready + in_flight > 0)
FROM pgcourier.queues
