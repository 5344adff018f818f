"""A database per service: each service's role reaches its own database only, sends to
other services' inboxes only through its outbox and only what its contracts name, and
cannot pass for another service across a link; a service may live on another server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcourier import Courier, Worker
from services.orders.handlers import setup as orders_setup
from services.shared import contracts
from services.shared.database import role_url
from services.shared.topology_db import ShopDatabases, link_pairs
from tests.chaos.postgres import RestartablePostgres
from tests.helpers import wait_until
from tests.shop.conftest import ROLE_PASSWORDS, made_shop_databases, service_settings

SERVICES = ("users", "products", "orders", "payments")


@pytest.fixture(scope="module")
def per_service(server_url: str) -> Iterator[ShopDatabases]:
    with made_shop_databases(server_url, "databases") as databases:
        yield databases


def test_each_service_role_connects_to_its_own_database_only(per_service: ShopDatabases) -> None:
    for service in SERVICES:
        for owner in SERVICES:
            url = role_url(per_service.url(owner), service, ROLE_PASSWORDS[service])
            if service == owner:
                with psycopg.connect(url) as conn:
                    assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)
            else:
                with pytest.raises(psycopg.OperationalError, match="permission denied"):
                    psycopg.connect(url).close()


def test_links_join_exactly_the_services_that_message_each_other(
    per_service: ShopDatabases,
) -> None:
    assert set(link_pairs()) == {
        ("orders", "products"),
        ("orders", "payments"),
        ("products", "orders"),
        ("payments", "orders"),
        ("users", "products"),
        ("users", "orders"),
        ("users", "payments"),
    }
    for (sender, consumer), queues in link_pairs().items():
        with psycopg.connect(per_service.url(sender)) as conn:
            rows = conn.execute(
                "SELECT direction, node, state FROM pgcourier.links WHERE direction = 'out'"
                " AND node = %s",
                [consumer],
            ).fetchall()
            assert rows == [("out", consumer, "streaming")], (sender, consumer)
            remote = conn.execute(
                "SELECT queue_name FROM pgcourier.remote_queue WHERE node = %s ORDER BY 1",
                [consumer],
            ).fetchall()
            assert [r[0] for r in remote] == queues


def _outbox_insert_allowed(url: str, queue: str) -> bool:
    with psycopg.connect(url) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(
                    "INSERT INTO pgcourier.outbox (queue_name, message, headers)"
                    " VALUES (%s, '{}', '{}')",
                    [queue],
                )
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


@pytest.mark.parametrize("service", SERVICES)
def test_a_role_sends_through_its_outbox_exactly_where_its_contracts_say(
    per_service: ShopDatabases, service: str
) -> None:
    url = role_url(per_service.url(service), service, ROLE_PASSWORDS[service])
    for queue, consumer in contracts.CONSUMERS.items():
        if consumer == service:
            continue  # its own inbox is local, not in its outbox
        may = any(c.sender == service and c.queue == queue for c in contracts.CONTRACTS)
        allowed = _outbox_insert_allowed(url, queue) if may else None
        if may:
            assert allowed, (service, queue)
        else:
            # Either the queue is unknown here (no link) or the role is not granted.
            with psycopg.connect(url) as conn, pytest.raises(psycopg.Error):
                conn.execute(
                    "INSERT INTO pgcourier.outbox (queue_name, message, headers)"
                    " VALUES (%s, '{}', '{}')",
                    [queue],
                )


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO pgcourier.outbox (queue_name, sender) VALUES ('orders_inbox', 'payments_svc')",
        "INSERT INTO pgcourier.outbox (queue_name, origin) VALUES ('orders_inbox', 'payments')",
        "INSERT INTO pgcourier.outbox (queue_name, target) VALUES ('orders_inbox', 'orders')",
        "DELETE FROM pgcourier.outbox",
        "UPDATE pgcourier.outbox SET sender = 'x'",
        "DELETE FROM pgcourier.remote_queue",
        "INSERT INTO pgcourier.remote_grant VALUES ('orders_inbox', 'users_svc')",
        "UPDATE pgcourier.link SET retention_s = 1",
        "SELECT pgcourier.link_prune()",
        "DROP PUBLICATION pgcourier_to_orders",
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots",
    ],
)
def test_no_service_role_can_forge_a_stamp_or_change_a_link(
    per_service: ShopDatabases, statement: str
) -> None:
    url = role_url(per_service.url("products"), "products", ROLE_PASSWORDS["products"])
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


async def test_a_message_forged_by_another_service_across_a_link_is_dead_lettered_unhandled(
    per_service: ShopDatabases,
) -> None:
    # payments may send to orders_inbox (payment.captured), so it can put a
    # stock.reserved there; it arrives stamped payments_svc@payments, and orders
    # accepts stock.reserved only from products.
    payments = role_url(per_service.url("payments"), "payments", ROLE_PASSWORDS["payments"])
    orders = role_url(per_service.url("orders"), "orders", ROLE_PASSWORDS["orders"])
    async with Courier(payments) as bus:
        await bus.send(
            contracts.ORDERS_INBOX,
            {"order_id": "00000000-0000-0000-0000-000000000001"},
            type=contracts.STOCK_RESERVED,
        )
    async with Courier(orders) as courier:
        worker = Worker(courier, poll_interval=0.05)
        orders_setup(worker, service_settings("orders", orders))
        async with worker.running():

            async def dead() -> list[tuple[str, str]]:
                async with courier.pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT sender, errors::text FROM pgcourier.dead_letter"
                        " WHERE queue_name = 'orders_inbox'"
                    )
                    return await cur.fetchall()

            await wait_until(dead, within=15)
        [(sender, errors)] = await dead()
    assert sender == "payments_svc@payments"
    assert "ForbiddenSenderError" in errors and "products_svc" in errors


def test_orders_on_a_second_server_exchanges_messages_both_ways(
    server_url: str, second_server: RestartablePostgres
) -> None:
    orders_db = make_conninfo(second_server.url, dbname=f"shop_orders_{os.getpid()}")
    with made_shop_databases(
        server_url, "databases", env={"SHOP_DATABASE_URL_ORDERS": orders_db}
    ) as databases:
        assert databases.url("orders") == orders_db
        # The saga crosses servers both ways: orders -> products, products -> orders.
        asyncio.run(_one_event_each_way(databases))


async def _one_event_each_way(databases: ShopDatabases) -> None:
    products = role_url(databases.url("products"), "products", ROLE_PASSWORDS["products"])
    orders = role_url(databases.url("orders"), "orders", ROLE_PASSWORDS["orders"])
    async with Courier(products) as p, Courier(orders) as o:
        await p.send(
            contracts.ORDERS_INBOX,
            {"order_id": "00000000-0000-0000-0000-000000000002"},
            type=contracts.STOCK_RESERVED,
        )
        await o.send(
            contracts.PRODUCTS_INBOX,
            {"order_id": "00000000-0000-0000-0000-000000000002"},
            type=contracts.STOCK_RELEASE,
        )

    async def arrived(courier: Courier, queue: str) -> list[tuple[str]]:
        async with courier.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT sender FROM {}").format(sql.Identifier("pgmq", f"q_{queue}"))
            )
            return await cur.fetchall()

    async with Courier(databases.url("orders")) as o, Courier(databases.url("products")) as p:
        await wait_until(lambda: arrived(o, contracts.ORDERS_INBOX), within=20)
        await wait_until(lambda: arrived(p, contracts.PRODUCTS_INBOX), within=20)
        assert await arrived(o, contracts.ORDERS_INBOX) == [("products_svc@products",)]
        assert await arrived(p, contracts.PRODUCTS_INBOX) == [("orders_svc@orders",)]


async def test_a_user_change_published_by_users_reaches_every_other_services_database(
    per_service: ShopDatabases,
) -> None:
    # Demotion, deletion and logout take effect everywhere through user.changed: with a
    # database per service it crosses three links, one to each consuming service.
    users = role_url(per_service.url("users"), "users", ROLE_PASSWORDS["users"])
    user_id = "00000000-0000-0000-0000-00000000abcd"
    async with Courier(users) as bus:
        queues = await bus.publish(
            contracts.USER_CHANGED,
            {"user_id": user_id, "token_version": 2, "deleted": False},
            ordering_key=user_id,
        )
    assert sorted(queues) == sorted(
        q for t, q in contracts.TOPIC_BINDINGS if t == contracts.USER_CHANGED
    )

    for queue, service in contracts.CONSUMERS.items():

        async def arrived(url: str = per_service.url(service), q: str = queue) -> list[tuple]:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                cur = await conn.execute(
                    sql.SQL("SELECT sender FROM {} WHERE message ->> 'user_id' = %s").format(
                        sql.Identifier("pgmq", f"q_{q}")
                    ),
                    [user_id],
                )
                return await cur.fetchall()

        await wait_until(arrived, within=20)
        assert await arrived() == [("users_svc@users",)], service
