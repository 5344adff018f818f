-- The fake card provider's own ledger. It stands for a system outside the payments
-- database: only the provider writes it, each charge committed at once on its own
-- connection, so what it charged stays charged whatever becomes of the payments
-- transaction that asked (rolled back, or its worker killed). Like a real provider it
-- keeps each charge under the merchant's idempotency key and answers a repeated key
-- with the first answer.
CREATE SCHEMA card_provider;

CREATE TABLE card_provider.charge (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- The merchant's reference, as a real provider keeps it in a charge's metadata:
    -- what lets one check that no order's card was charged twice.
    order_id        uuid NOT NULL,
    amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
    card_token      text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('captured', 'declined')),
    reason          text,
    provider_ref    text UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'captured') = (provider_ref IS NOT NULL)),
    CHECK ((outcome = 'declined') = (reason IS NOT NULL))
);
CREATE INDEX charge_order_id ON card_provider.charge (order_id);

GRANT USAGE ON SCHEMA card_provider TO payments_svc;
GRANT SELECT, INSERT ON card_provider.charge TO payments_svc;
