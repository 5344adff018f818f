-- Run in every database: a row a link carried here that could not be delivered (no
-- such queue, addressed to another node, refused by the queue's table) is a dead
-- letter saying 'undeliverable'. A link that works delivers every row.
SELECT count(*),
       array_to_string((array_agg(format('%s from %s: %s', queue_name, sender,
                                         left(e.error, 160)) ORDER BY dead_letter_id))[1:3], '; ')
FROM pgcourier.dead_letter d
CROSS JOIN LATERAL (
    SELECT x ->> 'error' AS error FROM jsonb_array_elements(d.errors) AS x
    WHERE x ->> 'error' LIKE 'undeliverable:%' LIMIT 1
) e
