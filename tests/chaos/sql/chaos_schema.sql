-- What the clients know, loaded next to the orders service's tables (in its database)
-- after the run, so that every check of the orders is one query there. The shop's
-- services never see this schema.
CREATE SCHEMA chaos;
-- One row per Idempotency-Key a client used; order_id is the id its 202 carried.
CREATE TABLE chaos.placed (
    key      text PRIMARY KEY,
    card     text NOT NULL,
    order_id uuid,
    refused  integer  -- a 4xx status
);
-- Every order id a 202 carried for a key (more than one: the key created two orders).
CREATE TABLE chaos.seen (key text NOT NULL, order_id uuid NOT NULL);
