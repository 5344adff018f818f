-- A NULL parameter leaves its column as it is (PATCH semantics).
UPDATE products.product
SET name = coalesce(%(name)s::text, name),
    description = coalesce(%(description)s::text, description),
    category = coalesce(%(category)s::text, category),
    price_cents = coalesce(%(price_cents)s::integer, price_cents),
    active = coalesce(%(active)s::boolean, active),
    updated_at = now()
WHERE product_id = %(product_id)s
RETURNING product_id, name, description, category, price_cents, active, stock,
          created_at, updated_at
