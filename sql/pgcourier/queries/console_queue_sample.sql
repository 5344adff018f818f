-- The console's sample of every queue: the counts of pgcourier.queues, plus the last
-- message id the queue's sequence handed out. Ids count every insert (sends, link
-- deliveries, dead-letter retries), so two samples give the sending rate, and
-- sends minus the change in depth the rate at which messages left the queue
-- (acknowledged, dead-lettered or purged), with no archive needed.
SELECT q.queue, q.ready, q.in_flight, q.delayed, q.dead, q.oldest_ready_age_s,
       coalesce(pg_sequence_last_value(
           pg_get_serial_sequence('pgmq.' || quote_ident('q_' || q.queue), 'msg_id')::regclass
       ), 0) AS sent_total
FROM pgcourier.queues q
ORDER BY q.queue
