-- A worker that stops cleanly removes its row.
DELETE FROM pgcourier.worker WHERE worker_id = %(worker_id)s
