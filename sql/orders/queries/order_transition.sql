-- Moves an order on only from the status the caller saw: a stale or repeated step
-- updates nothing.
UPDATE orders."order"
SET status = %(to_status)s, reason = %(reason)s, updated_at = now()
WHERE order_id = %(order_id)s AND status = %(from_status)s
RETURNING order_id
