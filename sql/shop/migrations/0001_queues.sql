-- One queue per consuming service; events reach them through topic bindings.
-- A 10 s lease: a crashed worker's saga steps come back within seconds, and live
-- workers renew the lease of anything that takes longer.
SELECT pgcourier.queue_create('orders_inbox', visibility_timeout_s => 10, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('products_inbox', visibility_timeout_s => 10, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);
SELECT pgcourier.queue_create('payments_inbox', visibility_timeout_s => 10, max_attempts => 10,
                              backoff_base_s => 0.5, backoff_max_s => 30);

SELECT pgmq.bind_topic('order.placed', 'products_inbox');
SELECT pgmq.bind_topic('product.*', 'orders_inbox');
