import asyncio
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from services.shared.database import role_url, shop_migrate
from tests.shop.conftest import ROLE_PASSWORDS


def test_each_service_connects_as_its_own_role(shop_url: str) -> None:
    for service in ("users", "products", "orders", "payments"):
        with psycopg.connect(role_url(shop_url, service, ROLE_PASSWORDS[service])) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)


def test_service_roles_cannot_create_queues_or_touch_other_schemas(shop_url: str) -> None:
    with (
        psycopg.connect(role_url(shop_url, "orders", ROLE_PASSWORDS["orders"])) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE pgmq.q_sneaky (id int)")


def test_orders_role_gets_permission_denied_on_the_users_tables(shop_url: str) -> None:
    with (
        psycopg.connect(role_url(shop_url, "orders", ROLE_PASSWORDS["orders"])) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
    ):
        conn.execute("SELECT * FROM users.account")


def test_no_service_role_can_read_another_services_schema(shop_url: str) -> None:
    services = ("users", "products", "orders", "payments")
    for me in services:
        for other in services:
            if other == me:
                continue
            with psycopg.connect(role_url(shop_url, me, ROLE_PASSWORDS[me])) as conn:
                tables = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", [other]
                ).fetchall()
                assert tables, f"schema {other} has no tables"
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f'SELECT 1 FROM "{other}"."{tables[0][0]}" LIMIT 1')


async def test_two_shops_migrated_at_once_on_one_server_both_keep_the_passwords_given(
    server_url: str,
) -> None:
    # Roles are the cluster's: both migrations create or alter the same four at once.
    names = [f"pgcourier_shop_twin_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    urls = [make_conninfo(server_url, dbname=name) for name in names]
    try:
        for _ in range(3):
            await asyncio.gather(
                *(shop_migrate(url, role_passwords=ROLE_PASSWORDS) for url in urls)
            )
        for url in urls:
            for service, password in ROLE_PASSWORDS.items():
                with psycopg.connect(role_url(url, service, password)) as conn:
                    assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
