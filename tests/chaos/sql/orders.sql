-- Every order, with what it costs (for the checks comparing it with payments).
SELECT order_id::text, status, total_cents FROM orders."order"
