INSERT INTO orders.order_event (order_id, kind, status, detail)
VALUES (%(order_id)s, %(kind)s, %(status)s, %(detail)s)
