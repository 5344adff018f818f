SELECT product_id, name, description, category, price_cents, active, stock,
       created_at, updated_at
FROM products.product
WHERE product_id = %(product_id)s
  AND (active OR %(include_inactive)s)
