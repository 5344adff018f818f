-- Locks in product_id order (LockRows runs above the sort), so two transactions
-- locking overlapping sets of products never wait on each other in a cycle.
SELECT product_id, name, active, stock
FROM products.product
WHERE product_id = ANY(%(product_ids)s::uuid[])
ORDER BY product_id
FOR UPDATE
