-- Takes away every right the service roles have on the bus (and the blanket rights
-- the shop_bus group had before per-queue privileges): services/shared/bus.py then
-- grants, in the same transaction, exactly what the contracts name.
DO $$
DECLARE
    grantee text;
BEGIN
    FOREACH grantee IN ARRAY ARRAY['shop_bus', 'users_svc', 'products_svc', 'orders_svc', 'payments_svc'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grantee) THEN
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA pgmq, pgcourier FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgmq, pgcourier FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgmq, pgcourier FROM %I', grantee);
            EXECUTE format('REVOKE ALL ON SCHEMA pgmq, pgcourier FROM %I', grantee);
        END IF;
    END LOOP;
END
$$;
