-- Deletes a queue's dead letters for good: all of them, or only the given ids (ids
-- of other queues' dead letters are ignored, as in dead_letter_retry).
DELETE FROM pgcourier.dead_letter
WHERE queue_name = %(queue_name)s
  AND (%(dead_letter_ids)s::bigint[] IS NULL OR dead_letter_id = ANY(%(dead_letter_ids)s::bigint[]))
RETURNING dead_letter_id
