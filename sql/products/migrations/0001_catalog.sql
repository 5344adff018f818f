-- The products service's own schema: the catalog, its inventory and stock reservations.
-- Nothing here refers to another service's tables: orders learn about products from
-- product.created / product.updated events, and ask for stock with order.placed.
CREATE SCHEMA products;

CREATE TABLE products.category (
    name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products.product (
    product_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    category text NOT NULL REFERENCES products.category (name),
    price_cents integer NOT NULL CHECK (price_cents >= 0),
    active boolean NOT NULL DEFAULT true,
    -- The last line of defence against overselling: a reservation that would take
    -- stock below zero fails rather than commits.
    stock integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX product_category_name_idx ON products.product (category, name);
CREATE INDEX product_name_idx ON products.product (name, product_id);

-- One row per order that ever asked for or released stock. 'released' with no lines
-- is a tombstone: the order was cancelled before its order.placed arrived.
CREATE TABLE products.reservation (
    order_id uuid PRIMARY KEY,
    lines jsonb NOT NULL CHECK (jsonb_typeof(lines) = 'array'),
    status text NOT NULL CHECK (status IN ('reserved', 'released')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA products TO products_svc;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA products TO products_svc;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA products TO products_svc;
