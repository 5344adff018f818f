-- Orders not yet final: what the drain waits for (in the orders database).
SELECT count(*) FROM orders."order" WHERE status NOT IN ('confirmed', 'cancelled')
