-- Adds a signed delta to each product's stock; run only on rows already locked by
-- product_lock, so this statement takes no new locks in an arbitrary order.
UPDATE products.product p
SET stock = p.stock + d.delta, updated_at = now()
FROM unnest(%(product_ids)s::uuid[], %(deltas)s::integer[]) AS d(product_id, delta)
WHERE p.product_id = d.product_id
