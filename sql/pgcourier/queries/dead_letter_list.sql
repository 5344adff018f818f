SELECT dead_letter_id, msg_id, message, headers, attempts, errors, dead_at
FROM pgcourier.dead_letter
WHERE queue_name = %(queue_name)s
ORDER BY dead_letter_id
LIMIT %(limit)s
