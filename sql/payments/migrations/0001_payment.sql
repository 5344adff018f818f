-- The payments service's own schema: one payment per order, whatever its fate.
CREATE SCHEMA payments;

CREATE TABLE payments.payment (
    payment_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- One row per order, ever: it is what makes charges idempotent, and what a
    -- refund that overtook its charge leaves behind (a 'voided' tombstone).
    order_id       uuid NOT NULL UNIQUE,
    customer_id    text,
    amount_cents   integer NOT NULL CHECK (amount_cents >= 0),
    status         text NOT NULL
                   CHECK (status IN ('captured', 'declined', 'pending', 'refunded', 'voided')),
    reason         text,
    provider_ref   text,
    refunded_cents integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Unknown only for a tombstone: the refund command does not carry it.
    CHECK (customer_id IS NOT NULL OR status = 'voided'),
    CHECK (status <> 'declined' OR reason IS NOT NULL),
    CHECK (status NOT IN ('captured', 'refunded') OR provider_ref IS NOT NULL),
    -- Refunds are whole: money is conserved only if a refund is all or nothing.
    CHECK (refunded_cents = CASE WHEN status = 'refunded' THEN amount_cents ELSE 0 END)
);

GRANT USAGE ON SCHEMA payments TO payments_svc;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA payments TO payments_svc;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA payments TO payments_svc;
