-- Captured money goes back in full; a pending charge is voided so it never captures.
-- Anything else is already final: no row comes back and nothing more is said.
UPDATE payments.payment
SET status = CASE status WHEN 'captured' THEN 'refunded' ELSE 'voided' END,
    refunded_cents = CASE status WHEN 'captured' THEN amount_cents ELSE 0 END,
    updated_at = now()
WHERE order_id = %(order_id)s AND status IN ('captured', 'pending')
RETURNING status, refunded_cents
