-- pgcourier keeps pgmq's tables untouched in shape, so any pgmq client can still
-- send to and read from its queues; what pgcourier adds lives in its own schema.

CREATE TABLE pgcourier.queue (
    queue_name             text PRIMARY KEY
        REFERENCES pgmq.meta (queue_name) ON DELETE CASCADE,
    visibility_timeout_s   double precision NOT NULL DEFAULT 30
        CHECK (visibility_timeout_s > 0),
    max_attempts           integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    backoff_base_s         double precision NOT NULL DEFAULT 1 CHECK (backoff_base_s >= 0),
    backoff_max_s          double precision NOT NULL DEFAULT 300 CHECK (backoff_max_s >= 0),
    archive                boolean NOT NULL DEFAULT false,
    archive_retention_s    double precision NOT NULL DEFAULT 604800
        CHECK (archive_retention_s > 0),
    created_at             timestamptz NOT NULL DEFAULT now()
);

-- Messages that failed max_attempts times, with every attempt's error.
CREATE TABLE pgcourier.dead_letter (
    dead_letter_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_name     text        NOT NULL,
    msg_id         bigint      NOT NULL,
    message        jsonb,
    headers        jsonb,
    enqueued_at    timestamptz NOT NULL,
    attempts       integer     NOT NULL,
    errors         jsonb       NOT NULL DEFAULT '[]',
    dead_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_queue_idx ON pgcourier.dead_letter (queue_name, dead_letter_id);

-- Idempotent consumers: one row per (consumer, envelope message id) handled in a
-- transaction; a redelivered message finds its row and is acknowledged unhandled.
CREATE TABLE pgcourier.inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed_at_idx ON pgcourier.inbox (processed_at);

-- One NOTIFY per inserting statement, and Postgres folds identical notifications
-- within a transaction into one, so a transaction sending 1,000 messages notifies
-- once. No shared row is touched, so concurrent producers never queue behind each
-- other (unlike pgmq's enable_notify_insert, which updates one throttle row per
-- queue for every inserted row). Senders other than pgcourier wake workers too.
CREATE FUNCTION pgcourier.message_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgcourier_' || substr(TG_TABLE_NAME, 3), substr(TG_TABLE_NAME, 3));
    RETURN NULL;
END;
$$;

-- Creates (or adopts) a pgmq queue and gives it what pgcourier relies on.
CREATE FUNCTION pgcourier.queue_create(
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
    EXECUTE format(
        'CREATE UNIQUE INDEX IF NOT EXISTS %I ON pgmq.%I ((headers ->> ''idempotency_key''))'
        ' WHERE headers ? ''idempotency_key''', qtable || '_idempotency_idx', qtable);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON pgmq.%I ((headers ->> ''x-pgmq-group''), msg_id)'
        ' WHERE headers ? ''x-pgmq-group''', qtable || '_group_idx', qtable);
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

CREATE FUNCTION pgcourier.queue_drop(queue_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgcourier.dead_letter d WHERE d.queue_name = queue_drop.queue_name;
    RETURN pgmq.drop_queue(queue_name);
END;
$$;

-- Per-queue counts for the pgcourier.queues view. In flight: claimed and not yet
-- acknowledged (last_read_at set by the claim); delayed: waiting for its delay or
-- for a retry's backoff (pgcourier clears last_read_at when it schedules a retry).
CREATE FUNCTION pgcourier.queue_stats(now timestamptz DEFAULT NULL)
RETURNS TABLE (
    queue text,
    ready bigint,
    in_flight bigint,
    delayed bigint,
    dead bigint,
    oldest_ready_age_s double precision
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    q record;
    at timestamptz := coalesce(now, clock_timestamp());
BEGIN
    FOR q IN SELECT m.queue_name FROM pgmq.meta m ORDER BY m.queue_name LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %L::text,'
            ' count(*) FILTER (WHERE vt <= $1),'
            ' count(*) FILTER (WHERE vt > $1 AND last_read_at IS NOT NULL),'
            ' count(*) FILTER (WHERE vt > $1 AND last_read_at IS NULL),'
            ' (SELECT count(*) FROM pgcourier.dead_letter d WHERE d.queue_name = %L),'
            ' extract(epoch FROM $1 - min(enqueued_at) FILTER (WHERE vt <= $1))::double precision'
            ' FROM pgmq.%I', q.queue_name, q.queue_name, 'q_' || q.queue_name)
        USING at;
    END LOOP;
END;
$$;

CREATE VIEW pgcourier.queues AS SELECT * FROM pgcourier.queue_stats();

CREATE VIEW pgcourier.dead_letters AS
SELECT dead_letter_id, queue_name AS queue, msg_id, headers ->> 'type' AS type,
       attempts, errors -> -1 ->> 'error' AS last_error, dead_at, message
FROM pgcourier.dead_letter
ORDER BY dead_letter_id;
