-- pgcourier's own headers move under an x-pgcourier- prefix, so that another pgmq
-- client's `idempotency_key` or error headers never collide with them (a foreign
-- message carrying a plain `idempotency_key` twice used to fail on the unique index).
-- Every existing queue gets the new index; messages already queued keep their
-- meaning: before this migration only pgcourier could have written these keys
-- under the unique index.

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

-- The indexes pgcourier adds to a pgmq queue table: idempotent sends and per-key order.
CREATE FUNCTION pgcourier.queue_indexes(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    qtable text := 'q_' || queue_name;
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', qtable || '_idempotency_idx');
    EXECUTE format(
        'CREATE UNIQUE INDEX IF NOT EXISTS %I ON pgmq.%I ((headers ->> ''x-pgcourier-idempotency-key''))'
        ' WHERE headers ? ''x-pgcourier-idempotency-key''', qtable || '_pgcourier_idempotency_idx', qtable);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON pgmq.%I ((headers ->> ''x-pgmq-group''), msg_id)'
        ' WHERE headers ? ''x-pgmq-group''', qtable || '_group_idx', qtable);
END;
$$;

DO $$
DECLARE
    q record;
BEGIN
    FOR q IN SELECT c.queue_name FROM pgcourier.queue c JOIN pgmq.meta m USING (queue_name) LOOP
        EXECUTE format(
            'UPDATE pgmq.%I SET headers = (headers - ''idempotency_key'' - ''pgcourier_errors'')'
            ' || CASE WHEN headers ? ''idempotency_key'' THEN jsonb_build_object('
            '     ''x-pgcourier-idempotency-key'', headers -> ''idempotency_key'') ELSE ''{}'' END'
            ' || CASE WHEN headers ? ''pgcourier_errors'' THEN jsonb_build_object('
            '     ''x-pgcourier-errors'', headers -> ''pgcourier_errors'') ELSE ''{}'' END'
            ' WHERE jsonb_typeof(headers) = ''object'''
            '   AND (headers ? ''idempotency_key'' OR headers ? ''pgcourier_errors'')',
            'q_' || q.queue_name);
        PERFORM pgcourier.queue_indexes(q.queue_name);
    END LOOP;
END
$$;

-- Worker processes say here that they are alive: which queues they consume, when
-- they last claimed successfully, and whether their LISTEN connection is up. A
-- service's health check and `pgcourier workers` read it; rows of workers that
-- stopped beating are pruned by the others.
CREATE TABLE pgcourier.worker (
    worker_id      uuid        PRIMARY KEY,
    hostname       text        NOT NULL,
    pid            integer     NOT NULL,
    name           text,
    queues         text[]      NOT NULL,
    started_at     timestamptz NOT NULL,
    beat_at        timestamptz NOT NULL,
    last_claim_at  timestamptz,
    listening      boolean     NOT NULL,
    loops_alive    boolean     NOT NULL
);
