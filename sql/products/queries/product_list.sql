SELECT product_id, name, description, category, price_cents, active, stock,
       created_at, updated_at
FROM products.product
WHERE (%(category)s::text IS NULL OR category = %(category)s::text)
  AND (active OR %(include_inactive)s)
ORDER BY name, product_id
