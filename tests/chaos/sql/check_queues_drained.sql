-- Nothing left on any queue: not ready, not in flight, not delayed. The drain waits for
-- delayed messages to come due and be handled, so one that came due while the checks
-- ran is not mistaken for a stuck message. The detail names each message left (its
-- attempts, when its lease ends, its headers and the start of its body), what is
-- needed to tell a stuck worker from a lost wake-up.
SELECT coalesce(sum(ready + in_flight + delayed), 0),
       string_agg(format('%s: %s ready, %s in flight, %s delayed%s',
                         queue, ready, in_flight, delayed,
                         query_to_xml(format(
                             'SELECT msg_id, read_ct, round(extract(epoch FROM vt - now())::numeric, 1) AS vt_in_s, '
                             'headers, left(message::text, 160) AS message FROM pgmq.%I ORDER BY msg_id LIMIT 5',
                             'q_' || queue), false, true, '')),
                  '; ')
           FILTER (WHERE ready + in_flight + delayed > 0)
FROM pgcourier.queues
