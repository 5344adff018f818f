INSERT INTO products.product (name, description, category, price_cents, stock)
VALUES (%(name)s, %(description)s, %(category)s, %(price_cents)s, %(stock)s)
RETURNING product_id, name, description, category, price_cents, active, stock,
          created_at, updated_at
