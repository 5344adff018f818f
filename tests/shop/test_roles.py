import psycopg
import pytest

from services.shared.database import role_url


def test_each_service_connects_as_its_own_role_and_may_use_the_bus(shop_url: str) -> None:
    for service in ("users", "products", "orders", "payments"):
        with psycopg.connect(role_url(shop_url, service)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)
            conn.execute("SELECT pgmq.send('orders_inbox', '{}'::jsonb)")
            assert conn.execute("SELECT count(*) FROM pgcourier.queues").fetchone()[0] >= 3


def test_service_roles_cannot_create_queues_or_touch_other_schemas(shop_url: str) -> None:
    with (
        psycopg.connect(role_url(shop_url, "orders")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE pgmq.q_sneaky (id int)")
