-- Bookkeeping for numbered migrations; created before any migration runs.
CREATE SCHEMA IF NOT EXISTS pgcourier;

CREATE TABLE IF NOT EXISTS pgcourier.schema_migration (
    component  text        NOT NULL,
    version    text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
