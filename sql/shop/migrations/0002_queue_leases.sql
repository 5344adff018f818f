-- 5 s leases (were 10 s, equal to the saga's 10 s step timeout): a crashed worker's
-- message now comes back, and is handled, well before the step it belongs to times
-- out. Live workers renew a slow handler's lease every third of it, so a short lease
-- costs only renewals, and only for handlers slower than ~1.7 s. The orders service
-- refuses to start when its step timeout is under 1.5 x (lease + first backoff).
SELECT pgcourier.queue_create('orders_inbox', visibility_timeout_s => 5, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('products_inbox', visibility_timeout_s => 5, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('payments_inbox', visibility_timeout_s => 5, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
