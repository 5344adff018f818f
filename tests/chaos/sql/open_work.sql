-- Orders not yet final, and messages ready or in flight: what the drain waits for.
SELECT (SELECT count(*) FROM orders."order" WHERE status NOT IN ('confirmed', 'cancelled')),
       (SELECT coalesce(sum(ready + in_flight), 0) FROM pgcourier.queues)
