-- Moves an order on only from the status the caller saw: a stale or repeated step
-- updates nothing. Every transition leaves pending, after which the card token is no
-- longer needed: the charge, if any, is sent in this same transaction. The next step's
-- deadline is set (deadline_s), or cleared (NULL) when the saga has no next step.
UPDATE orders."order"
SET status = %(to_status)s, reason = %(reason)s, card_token = NULL, updated_at = now(),
    step_deadline = now() + make_interval(secs => %(deadline_s)s::float8)
WHERE order_id = %(order_id)s AND status = %(from_status)s
RETURNING order_id
