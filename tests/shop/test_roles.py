import psycopg
import pytest

from services.shared.database import role_url


def test_each_service_connects_as_its_own_role(shop_url: str) -> None:
    for service in ("users", "products", "orders", "payments"):
        with psycopg.connect(role_url(shop_url, service)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)


def test_service_roles_cannot_create_queues_or_touch_other_schemas(shop_url: str) -> None:
    with (
        psycopg.connect(role_url(shop_url, "orders")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE pgmq.q_sneaky (id int)")


def test_orders_role_gets_permission_denied_on_the_users_tables(shop_url: str) -> None:
    with (
        psycopg.connect(role_url(shop_url, "orders")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
    ):
        conn.execute("SELECT * FROM users.account")


def test_no_service_role_can_read_another_services_schema(shop_url: str) -> None:
    services = ("users", "products", "orders", "payments")
    for me in services:
        for other in services:
            if other == me:
                continue
            with psycopg.connect(role_url(shop_url, me)) as conn:
                tables = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", [other]
                ).fetchall()
                assert tables, f"schema {other} has no tables"
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f'SELECT 1 FROM "{other}"."{tables[0][0]}" LIMIT 1')
