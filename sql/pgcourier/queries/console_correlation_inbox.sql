-- Inbox records (a transactional handler's "handled once") of the given envelope ids.
SELECT consumer, message_id, processed_at
FROM pgcourier.inbox
WHERE message_id = ANY(%(message_ids)s::text[])
ORDER BY processed_at
