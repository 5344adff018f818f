-- A saga step's deadline, kept on the order instead of a delayed saga.timeout message
-- per step: each order sent itself two timeouts that, on the normal path, arrived
-- after their step had finished and did nothing, a third of the shop's messages and
-- two of its seven transactions per order. The orders worker expires due steps
-- (services/orders/deadlines.py); a step that finishes sets the next deadline or none.
-- Orders already in the saga keep the timeouts they sent: they still fire.
ALTER TABLE orders."order" ADD COLUMN step_deadline timestamptz;
ALTER TABLE orders."order"
    ADD CONSTRAINT order_deadline_only_in_the_saga
    CHECK (step_deadline IS NULL OR status IN ('pending', 'awaiting_payment'));
-- Only orders in the saga have one: the expiry's scan reads a few index entries.
CREATE INDEX order_step_deadline ON orders."order" (step_deadline)
    WHERE step_deadline IS NOT NULL;
