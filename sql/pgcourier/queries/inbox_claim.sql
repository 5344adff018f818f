-- Returns a row only the first time (consumer, message_id) is seen; a concurrent
-- transaction with the same key waits here until the first commits or rolls back.
INSERT INTO pgcourier.inbox (consumer, message_id)
VALUES (%(consumer)s, %(message_id)s)
ON CONFLICT DO NOTHING
RETURNING message_id
