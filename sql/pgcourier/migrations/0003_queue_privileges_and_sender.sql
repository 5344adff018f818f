-- Queue privileges and the stamped sender.
--
-- Every message records the database role that inserted it, in a `sender` column
-- defaulting to current_user that senders are not granted to write: Postgres stamps
-- it, nobody can forge it. pgmq's own functions name their columns, so pgmq.send,
-- pgmq.read and other pgmq clients work as before (and get stamped too).
--
-- Per queue, the owner (the migrating role) says which roles may send to it and which
-- consume it. Senders may only insert (and see the msg_id they get back); consumers
-- may claim, acknowledge, retry and dead-letter, and see only their own queues' rows
-- of the shared pgcourier.inbox and pgcourier.dead_letter (row-level security).
-- Nobody but the owner may change settings, bindings or migrations, drop or purge.

-- The columns pgcourier adds to a queue's tables. Messages queued before this
-- migration keep a NULL sender: unknown, and refused by handlers that name senders.
CREATE FUNCTION pgcourier.queue_columns(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE pgmq.%I ADD COLUMN IF NOT EXISTS sender text', 'q_' || queue_name);
    EXECUTE format('ALTER TABLE pgmq.%I ALTER COLUMN sender SET DEFAULT current_user',
                   'q_' || queue_name);
    -- The archive keeps the sender it is given (pgmq.archive gives none).
    EXECUTE format('ALTER TABLE pgmq.%I ADD COLUMN IF NOT EXISTS sender text', 'a_' || queue_name);
END;
$$;

CREATE OR REPLACE FUNCTION pgcourier.queue_create(
    queue_name text,
    visibility_timeout_s double precision DEFAULT 30,
    max_attempts integer DEFAULT 5,
    backoff_base_s double precision DEFAULT 1,
    backoff_max_s double precision DEFAULT 300,
    archive boolean DEFAULT false,
    archive_retention_s double precision DEFAULT 604800
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := 'q_' || queue_name;
BEGIN
    IF queue_name !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name %: use 1-47 lowercase letters, digits or _, not starting with a digit', queue_name
            USING ERRCODE = '22023';
    END IF;
    PERFORM pgmq.create(queue_name);

    -- High-churn table: leave room for HOT updates of vt/read_ct, and vacuum
    -- early so dead rows from acks do not pile up at the head of the queue.
    EXECUTE format(
        'ALTER TABLE pgmq.%I SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,'
        ' autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0,'
        ' autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_cost_delay = 0,'
        ' autovacuum_analyze_scale_factor = 0.02)', qtable);
    PERFORM pgcourier.queue_columns(queue_name);
    PERFORM pgcourier.queue_indexes(queue_name);
    EXECUTE format('DROP TRIGGER IF EXISTS pgcourier_notify ON pgmq.%I', qtable);
    EXECUTE format(
        'CREATE TRIGGER pgcourier_notify AFTER INSERT ON pgmq.%I'
        ' FOR EACH STATEMENT EXECUTE FUNCTION pgcourier.message_notify()', qtable);

    INSERT INTO pgcourier.queue AS q (queue_name, visibility_timeout_s, max_attempts,
        backoff_base_s, backoff_max_s, archive, archive_retention_s)
    VALUES (queue_name, visibility_timeout_s, max_attempts, backoff_base_s, backoff_max_s,
        archive, archive_retention_s)
    ON CONFLICT ON CONSTRAINT queue_pkey DO UPDATE SET
        visibility_timeout_s = EXCLUDED.visibility_timeout_s,
        max_attempts = EXCLUDED.max_attempts,
        backoff_base_s = EXCLUDED.backoff_base_s,
        backoff_max_s = EXCLUDED.backoff_max_s,
        archive = EXCLUDED.archive,
        archive_retention_s = EXCLUDED.archive_retention_s;
END;
$$;

DO $$
DECLARE
    q record;
BEGIN
    FOR q IN SELECT c.queue_name FROM pgcourier.queue c JOIN pgmq.meta m USING (queue_name) LOOP
        PERFORM pgcourier.queue_columns(q.queue_name);
    END LOOP;
END
$$;

ALTER TABLE pgcourier.dead_letter ADD COLUMN sender text;

-- -- Who may do what ---------------------------------------------------------------

-- True when the current role consumes `queue_name` (may delete from its table): what
-- row-level security on the shared tables keys on, so grants stay the one truth.
CREATE FUNCTION pgcourier.may_consume(queue_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        has_table_privilege(to_regclass(format('pgmq.%I', 'q_' || queue_name)), 'DELETE'),
        false)
$$;

CREATE FUNCTION pgcourier.grant_send(queue_name text, role_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgcourier.queue q WHERE q.queue_name = grant_send.queue_name) THEN
        RAISE EXCEPTION 'queue % does not exist', queue_name USING ERRCODE = '42P01';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgmq, pgcourier TO %I', role_name);
    -- What a send needs: insert the three columns a sender chooses, and read back
    -- the msg_id it got (RETURNING); and the bindings, to publish to a topic.
    EXECUTE format('GRANT INSERT (vt, message, headers), SELECT (msg_id) ON pgmq.%I TO %I',
                   'q_' || queue_name, role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta, pgmq.topic_bindings TO %I', role_name);
END;
$$;

CREATE FUNCTION pgcourier.grant_consume(queue_name text, role_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgcourier.queue q WHERE q.queue_name = grant_consume.queue_name) THEN
        RAISE EXCEPTION 'queue % does not exist', queue_name USING ERRCODE = '42P01';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgmq, pgcourier TO %I', role_name);
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON pgmq.%I TO %I', 'q_' || queue_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON pgmq.%I TO %I', 'a_' || queue_name, role_name);
    -- Shared tables, each row visible and writable only to its queue's consumers.
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON pgcourier.inbox TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT ON pgcourier.dead_letter TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON pgcourier.worker TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgcourier.queue, pgmq.meta TO %I', role_name);
END;
$$;

-- Takes back every right a role has on a queue (sending and consuming).
CREATE FUNCTION pgcourier.revoke_queue(queue_name text, role_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('REVOKE ALL ON pgmq.%I FROM %I', 'q_' || queue_name, role_name);
    EXECUTE format('REVOKE ALL ON pgmq.%I FROM %I', 'a_' || queue_name, role_name);
END;
$$;

-- Who may send to and consume each queue, from the grants themselves (a sender's
-- INSERT is granted on columns, hence has_any_column_privilege).
CREATE VIEW pgcourier.queue_privileges AS
SELECT m.queue_name AS queue, r.rolname AS role,
       has_any_column_privilege(r.oid, format('pgmq.%I', 'q_' || m.queue_name)::regclass, 'INSERT')
           AS may_send,
       has_table_privilege(r.oid, format('pgmq.%I', 'q_' || m.queue_name)::regclass, 'DELETE')
           AS may_consume
FROM pgmq.meta m
CROSS JOIN pg_roles r
WHERE r.rolname !~ '^pg_'
  AND NOT r.rolsuper
  AND (has_any_column_privilege(r.oid, format('pgmq.%I', 'q_' || m.queue_name)::regclass, 'INSERT')
       OR has_table_privilege(r.oid, format('pgmq.%I', 'q_' || m.queue_name)::regclass, 'DELETE'));

-- Only the owner creates, drops, purges, binds and grants: these run with the
-- caller's rights anyway, and nobody else is meant to call them.
REVOKE EXECUTE ON FUNCTION pgcourier.queue_create(text, double precision, integer,
    double precision, double precision, boolean, double precision) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.queue_drop(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.queue_indexes(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.queue_columns(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.grant_send(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.grant_consume(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pgcourier.revoke_queue(text, text) FROM PUBLIC;

-- Row-level security on the shared tables. The owner (who migrates) bypasses it.
ALTER TABLE pgcourier.inbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY inbox_own_queues ON pgcourier.inbox
    USING (pgcourier.may_consume(consumer))
    WITH CHECK (pgcourier.may_consume(consumer));

ALTER TABLE pgcourier.dead_letter ENABLE ROW LEVEL SECURITY;
CREATE POLICY dead_letter_own_queues ON pgcourier.dead_letter
    USING (pgcourier.may_consume(queue_name))
    WITH CHECK (pgcourier.may_consume(queue_name));

-- Heartbeats: everyone may read them (health checks), each role writes its own.
ALTER TABLE pgcourier.worker ADD COLUMN db_role text NOT NULL DEFAULT current_user;
ALTER TABLE pgcourier.worker ENABLE ROW LEVEL SECURITY;
CREATE POLICY worker_read ON pgcourier.worker FOR SELECT USING (true);
CREATE POLICY worker_insert ON pgcourier.worker FOR INSERT WITH CHECK (db_role = current_user);
CREATE POLICY worker_update ON pgcourier.worker FOR UPDATE
    USING (db_role = current_user) WITH CHECK (db_role = current_user);
CREATE POLICY worker_delete ON pgcourier.worker FOR DELETE USING (db_role = current_user);
