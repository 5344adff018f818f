-- Nothing inserted: the key was used before; provider_charge_get has the first answer.
INSERT INTO card_provider.charge
    (idempotency_key, order_id, amount_cents, card_fingerprint, card_last4, outcome, reason,
     provider_ref)
VALUES (%(idempotency_key)s, %(order_id)s, %(amount_cents)s, %(card_fingerprint)s,
        %(card_last4)s, %(outcome)s, %(reason)s, %(provider_ref)s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING true
