-- The shop sends nothing malformed in this run, so no message should be dead.
SELECT count(*),
       array_to_string((array_agg(format('%s %s: %s', queue, type, left(last_error, 160))
                                  ORDER BY dead_letter_id))[1:3], '; ')
FROM pgcourier.dead_letters
