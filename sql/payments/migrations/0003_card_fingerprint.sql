-- The provider's ledger keeps no card token in clear: a SHA-256 fingerprint, enough to
-- tell a repeated charge from another card under the same idempotency key, and the last
-- four characters, enough for a person to recognise the card.
ALTER TABLE card_provider.charge
    ADD COLUMN card_fingerprint text,
    ADD COLUMN card_last4 text;
UPDATE card_provider.charge
SET card_fingerprint = encode(sha256(convert_to(card_token, 'UTF8')), 'hex'),
    card_last4 = right(card_token, 4);
ALTER TABLE card_provider.charge
    ALTER COLUMN card_fingerprint SET NOT NULL,
    ALTER COLUMN card_last4 SET NOT NULL,
    ADD CONSTRAINT charge_card_fingerprint_sha256 CHECK (card_fingerprint ~ '^[0-9a-f]{64}$'),
    ADD CONSTRAINT charge_card_last4_short CHECK (length(card_last4) <= 4),
    DROP COLUMN card_token;
