SELECT payment_id, order_id, customer_id, amount_cents, status, reason, provider_ref,
       refunded_cents, created_at, updated_at
FROM payments.payment
WHERE order_id = %(order_id)s
ORDER BY created_at, payment_id
