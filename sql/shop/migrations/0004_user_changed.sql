-- The users service's user.changed events reach every service that checks tokens
-- (users itself applies its changes directly): each keeps a table of tokens to refuse.
SELECT pgmq.bind_topic('user.changed', 'products_inbox');
SELECT pgmq.bind_topic('user.changed', 'orders_inbox');
SELECT pgmq.bind_topic('user.changed', 'payments_inbox');
