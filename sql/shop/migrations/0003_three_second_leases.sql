-- 3 s leases (were 5 s): a saga step is two hops, each of which a crash can hold up
-- by a lease, and with 5 s leases a 30-minute fault run still cancelled 1.8% of good
-- sales at the 10 s step timeout. Live workers renew a slow handler's lease every
-- second. The step timeout is now 15 s (the orders service checks 1.5 x 2 x (lease +
-- first backoff) = 10.5 s).
SELECT pgcourier.queue_create('orders_inbox', visibility_timeout_s => 3, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('products_inbox', visibility_timeout_s => 3, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('payments_inbox', visibility_timeout_s => 3, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
