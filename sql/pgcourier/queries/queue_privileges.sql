SELECT queue, role, may_send, may_consume FROM pgcourier.queue_privileges ORDER BY queue, role
