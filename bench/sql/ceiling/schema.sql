-- A queue table shaped like one pgmq.create() makes (pgmq.q_<name>): the identity
-- primary key the claims walk in order, and pgmq's index on vt. pgcourier's partial
-- idempotency index (headers ? 'idempotency_key') is left out: no message here has one.
CREATE SCHEMA IF NOT EXISTS ceiling;
DROP TABLE IF EXISTS ceiling.q;
CREATE TABLE ceiling.q (
    msg_id       bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    read_ct      integer NOT NULL DEFAULT 0,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    last_read_at timestamptz,
    vt           timestamptz NOT NULL,
    message      jsonb,
    headers      jsonb
);
CREATE INDEX q_vt_idx ON ceiling.q (vt);
