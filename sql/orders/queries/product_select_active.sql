-- The orderable products among the given ids, held still until the order commits.
SELECT product_id, name, price_cents
FROM orders.product
WHERE product_id = ANY(%(product_ids)s::uuid[]) AND active
FOR SHARE
