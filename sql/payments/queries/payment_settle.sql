-- Records the provider's answer on a payment still pending.
UPDATE payments.payment
SET status = %(status)s, reason = %(reason)s, provider_ref = %(provider_ref)s, updated_at = now()
WHERE payment_id = %(payment_id)s AND status = 'pending'
RETURNING payment_id
