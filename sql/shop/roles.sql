-- Login roles, one per service, and the group that may use the bus. Roles belong to
-- the cluster, not the database, so this runs (idempotently) at every start-up.
-- Each role's password comes from its own setting, shop.<role>_password (shop_migrate
-- sets a SCRAM verifier there, never the password itself); empty or unset leaves the
-- role's password as it is (none, for a role just created).
DO $$
DECLARE
    service text;
    role text;
    password text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop_bus') THEN
        CREATE ROLE shop_bus NOLOGIN;
    END IF;
    FOREACH service IN ARRAY ARRAY['users', 'products', 'orders', 'payments'] LOOP
        role := service || '_svc';
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', role);
        END IF;
        password := nullif(current_setting('shop.' || role || '_password', true), '');
        IF password IS NOT NULL THEN
            EXECUTE format('ALTER ROLE %I PASSWORD %L', role, password);
        END IF;
        EXECUTE format('GRANT shop_bus TO %I', role);
    END LOOP;
-- Another process creating or altering the same roles at the same moment makes this
-- fail whole (a unique violation, or "tuple concurrently updated"): shop_migrate runs
-- it again, when the roles exist, so that the passwords given are still set.
END
$$;
