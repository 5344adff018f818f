-- The queues bound (pgmq.bind_topic) to a pattern matching the topic, and the remote
-- queues bound (pgcourier.bind_topic) likewise.
SELECT queue_name FROM pgmq.topic_bindings WHERE %(topic)s ~ compiled_regex
UNION
SELECT queue_name FROM pgcourier.remote_binding WHERE %(topic)s ~ compiled_regex
ORDER BY queue_name
