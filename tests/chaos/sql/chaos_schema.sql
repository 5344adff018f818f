-- What the clients and the setup know, loaded next to the shop's tables after the run
-- so that every check is one query. The shop's services never see this schema.
CREATE SCHEMA chaos;
CREATE TABLE chaos.product_initial (product_id uuid PRIMARY KEY, stock integer NOT NULL);
-- One row per Idempotency-Key a client used; order_id is the id its 202 carried.
CREATE TABLE chaos.placed (
    key      text PRIMARY KEY,
    card     text NOT NULL,
    order_id uuid,
    refused  integer  -- a 4xx status
);
-- Every order id a 202 carried for a key (more than one: the key created two orders).
CREATE TABLE chaos.seen (key text NOT NULL, order_id uuid NOT NULL);
