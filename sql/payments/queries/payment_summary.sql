-- Every payment ever captured counts, refunded or not, so that
-- captured - refunded is the money the shop still holds.
SELECT coalesce(sum(amount_cents) FILTER (WHERE status IN ('captured', 'refunded')), 0)::bigint,
       coalesce(sum(refunded_cents), 0)::bigint
FROM payments.payment
