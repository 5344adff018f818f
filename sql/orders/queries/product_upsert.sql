-- Applies a product event to the local copy; an event older than the copy is ignored,
-- so a retried or late event cannot roll a price back.
INSERT INTO orders.product (product_id, name, price_cents, active, updated_at)
VALUES (%(product_id)s, %(name)s, %(price_cents)s, %(active)s,
        coalesce(%(updated_at)s::timestamptz, now()))
ON CONFLICT (product_id) DO UPDATE
SET name = EXCLUDED.name,
    price_cents = EXCLUDED.price_cents,
    active = EXCLUDED.active,
    updated_at = EXCLUDED.updated_at
WHERE orders.product.updated_at <= EXCLUDED.updated_at
