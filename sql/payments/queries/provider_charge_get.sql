SELECT order_id, amount_cents, card_fingerprint, outcome, reason, provider_ref
FROM card_provider.charge
WHERE idempotency_key = %(idempotency_key)s
