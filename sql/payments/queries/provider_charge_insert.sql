-- Nothing inserted: the key was used before; provider_charge_get has the first answer.
INSERT INTO card_provider.charge
    (idempotency_key, order_id, amount_cents, card_token, outcome, reason, provider_ref)
VALUES (%(idempotency_key)s, %(order_id)s, %(amount_cents)s, %(card_token)s, %(outcome)s,
        %(reason)s, %(provider_ref)s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING true
