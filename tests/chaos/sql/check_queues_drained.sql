-- Nothing left on any queue: not ready, not in flight, not delayed. The drain waits for
-- delayed messages to come due and be handled, so one that came due while the checks
-- ran is not mistaken for a stuck message.
SELECT coalesce(sum(ready + in_flight + delayed), 0),
       string_agg(format('%s: %s ready, %s in flight, %s delayed',
                         queue, ready, in_flight, delayed), '; ')
           FILTER (WHERE ready + in_flight + delayed > 0)
FROM pgcourier.queues
