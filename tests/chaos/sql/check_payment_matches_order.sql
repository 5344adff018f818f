-- Per order: a confirmed order has one captured payment of its total; a final order
-- has no money still captured or a charge still pending.
SELECT count(*),
       array_to_string((array_agg(format('%s %s: payment %s (%s of %s cents)', o.order_id,
                                         o.status, coalesce(p.status, 'none'), p.amount_cents,
                                         o.total_cents) ORDER BY o.order_id))[1:3], '; ')
FROM orders."order" o
LEFT JOIN payments.payment p USING (order_id)
WHERE (o.status = 'confirmed'
       AND (p.status IS DISTINCT FROM 'captured' OR p.amount_cents <> o.total_cents))
   OR (o.status = 'cancelled' AND p.status IN ('captured', 'pending'))
