-- The stock of the products the suite created.
SELECT product_id::text, stock FROM products.product WHERE product_id = ANY(%s::uuid[])
