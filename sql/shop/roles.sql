-- Login roles, one per service, and the group that may use the bus. Roles belong to
-- the cluster, not the database, so this runs (idempotently) at every start-up.
-- The password comes from the shop.role_password setting; empty means none (trust).
DO $$
DECLARE
    service text;
    password text := nullif(current_setting('shop.role_password', true), '');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop_bus') THEN
        CREATE ROLE shop_bus NOLOGIN;
    END IF;
    FOREACH service IN ARRAY ARRAY['users', 'products', 'orders', 'payments'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = service || '_svc') THEN
            EXECUTE format('CREATE ROLE %I LOGIN', service || '_svc');
        END IF;
        EXECUTE format('ALTER ROLE %I PASSWORD %L', service || '_svc', password);
        EXECUTE format('GRANT shop_bus TO %I', service || '_svc');
    END LOOP;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    -- Another process created the same roles at the same moment: theirs will do.
    NULL;
END
$$;
