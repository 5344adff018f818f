SELECT name
FROM products.category
ORDER BY name
