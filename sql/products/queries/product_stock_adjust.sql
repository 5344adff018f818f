-- Matches no row when the product is unknown or the result would leave the range;
-- the row lock taken by UPDATE makes concurrent adjustments see each other's result.
-- bigint so that the range test itself cannot overflow.
UPDATE products.product
SET stock = stock + %(delta)s, updated_at = now()
WHERE product_id = %(product_id)s
  AND stock::bigint + %(delta)s BETWEEN 0 AND %(max_stock)s
RETURNING product_id, stock
