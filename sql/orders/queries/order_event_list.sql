SELECT kind, status, detail, at
FROM orders.order_event
WHERE order_id = %(order_id)s
ORDER BY event_id
