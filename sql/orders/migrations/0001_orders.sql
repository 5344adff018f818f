-- The orders service: a local copy of the catalogue (fed by product events), orders,
-- their lines at the price of the day, and the history of every saga step.
CREATE SCHEMA orders;

-- Filled only from product.created / product.updated; never queried across services.
CREATE TABLE orders.product (
    product_id  uuid PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    active      boolean NOT NULL,
    -- When products sent the event: an older event arriving late must not win.
    updated_at  timestamptz NOT NULL
);

CREATE TABLE orders."order" (
    order_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'awaiting_payment', 'confirmed', 'cancelled')),
    reason      text,
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    card_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_reason_iff_cancelled CHECK ((status = 'cancelled') = (reason IS NOT NULL))
);

CREATE INDEX order_customer_created ON orders."order" (customer_id, created_at DESC);

CREATE TABLE orders.order_line (
    order_id         uuid NOT NULL REFERENCES orders."order" ON DELETE CASCADE,
    line_no          integer NOT NULL CHECK (line_no > 0),
    product_id       uuid NOT NULL,
    name             text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, product_id),
    UNIQUE (order_id, line_no)
);

-- Append-only: every status change and every saga reply, in the order they happened.
CREATE TABLE orders.order_event (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders."order" ON DELETE CASCADE,
    kind     text NOT NULL,
    status   text NOT NULL,
    detail   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX order_event_order ON orders.order_event (order_id, event_id);

GRANT USAGE ON SCHEMA orders TO orders_svc;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA orders TO orders_svc;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA orders TO orders_svc;
