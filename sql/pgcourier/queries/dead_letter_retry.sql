-- Puts dead letters back on their queue as fresh messages (attempts start again).
-- The idempotency key is dropped: a retry is an operator's decision, and a newer
-- message holding the same key must not make the retry fail or lose the letter.
-- The original sender is kept: only the queue's owner may write that column, and it
-- is the owner who retries.
WITH revived AS (
    DELETE FROM pgcourier.dead_letter
    WHERE queue_name = %(queue_name)s
      AND (%(dead_letter_ids)s::bigint[] IS NULL OR dead_letter_id = ANY(%(dead_letter_ids)s::bigint[]))
    RETURNING dead_letter_id, message, headers, sender
)
INSERT INTO {queue} (vt, message, headers, sender)
SELECT clock_timestamp(), message,
       CASE jsonb_typeof(headers) WHEN 'object' THEN headers - 'x-pgcourier-idempotency-key'
                                  ELSE headers END,
       sender
FROM revived ORDER BY dead_letter_id
RETURNING msg_id
