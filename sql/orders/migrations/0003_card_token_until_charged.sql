-- A card token is kept only while the order waits for its stock: it leaves the orders
-- schema in the transaction that sends payment.charge (which carries it to payments)
-- or that cancels the order, and no order past pending may hold one.
ALTER TABLE orders."order" ALTER COLUMN card_token DROP NOT NULL;
UPDATE orders."order" SET card_token = NULL WHERE status <> 'pending';
ALTER TABLE orders."order"
    ADD CONSTRAINT order_card_token_only_pending CHECK (status = 'pending' OR card_token IS NULL);

-- A customer's orders still in the saga, counted on every placement (the cap on them).
CREATE INDEX order_customer_open ON orders."order" (customer_id)
    WHERE status IN ('pending', 'awaiting_payment');
