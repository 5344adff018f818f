-- What every service may do on the bus: send, claim, acknowledge, read its state.
-- Runs after the migrations so that it covers every queue table they created.
GRANT USAGE ON SCHEMA pgmq, pgcourier TO shop_bus;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgmq, pgcourier TO shop_bus;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgmq, pgcourier TO shop_bus;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq, pgcourier TO shop_bus;
