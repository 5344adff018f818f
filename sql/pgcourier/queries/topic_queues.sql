-- The queues bound (pgmq.bind_topic) to a pattern matching the topic.
SELECT DISTINCT queue_name FROM pgmq.topic_bindings
WHERE %(topic)s ~ compiled_regex
ORDER BY queue_name
