"""The shop end to end: real service processes, real HTTP, real Postgres.

Each test starts every service process (HTTP and workers, each as its own
database role) exactly as runner.py does, on free ports, against a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from runner import ShopKeys, kept_keys
from services.demo import run_demo
from services.shared.settings import ServiceSettings
from services.shared.topology_db import ShopDatabases
from services.supervisor import Supervisor
from services.topology import ServiceProcess, process_env, processes
from tests.chaos.postgres import RestartablePostgres
from tests.helpers import wait_until_sync
from tests.shop.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROLE_PASSWORDS, made_shop_databases

SAGA_STEP_TIMEOUT = 3.0
MAX_OPEN_ORDERS = ServiceSettings.__dataclass_fields__["max_open_orders"].default
pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningShop:
    databases: ShopDatabases
    urls: dict[str, str]
    supervisor: Supervisor
    ports: dict[str, int]
    keys: ShopKeys
    step_timeout_s: float = SAGA_STEP_TIMEOUT
    max_open_orders: int = MAX_OPEN_ORDERS

    def env(self, process: ServiceProcess) -> dict[str, str]:
        return process_env(
            process,
            self.databases,
            **self.keys.settings(),
            saga_step_timeout_s=self.step_timeout_s,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            role_passwords=ROLE_PASSWORDS,
            ports=self.ports,
            max_open_orders=self.max_open_orders,
        )

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=30)

    def login(self, email: str, password: str) -> str:
        with self.client() as http:
            r = http.post(
                f"{self.urls['users']}/users/login", json={"email": email, "password": password}
            )
            assert r.status_code == 200, r.text
            return r.json()["token"]

    def customer(self) -> str:
        email = f"c-{uuid.uuid4().hex[:10]}@shop.test"
        with self.client() as http:
            r = http.post(
                f"{self.urls['users']}/users/register",
                json={"email": email, "password": "password-123"},
            )
            assert r.status_code == 201, r.text
        return self.login(email, "password-123")


@contextlib.contextmanager
def started_shop(
    databases: ShopDatabases,
    log_dir: Path,
    *,
    step_timeout_s: float = SAGA_STEP_TIMEOUT,
    max_open_orders: int = MAX_OPEN_ORDERS,
) -> Iterator[RunningShop]:
    """Every process runner.py starts for these databases, on free ports."""
    ports = {s: free_port() for s in ("users", "products", "orders", "payments")}
    running = RunningShop(
        databases,
        {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
        Supervisor(log_dir=log_dir / "logs"),
        ports,
        kept_keys(log_dir / "keys"),
        step_timeout_s,
        max_open_orders,
    )
    try:
        for process in processes(replicas=1, topology=databases.topology):
            running.supervisor.start(process, running.env(process))
        running.supervisor.wait_healthy(running.urls)
        yield running
    finally:
        running.supervisor.stop_all()


@pytest.fixture
def shop(shop_databases: ShopDatabases, tmp_path: Path) -> Iterator[RunningShop]:
    """In each topology (see shop_databases)."""
    with started_shop(shop_databases, tmp_path) as running:
        yield running


@pytest.fixture
def patient_shop(shop_databases: ShopDatabases, tmp_path: Path) -> Iterator[RunningShop]:
    """As `shop`, with saga steps that wait 20 s: long enough, on a loaded machine,
    for a burst of orders or workers killed and started again not to time sagas out.
    A customer may have 50 orders open, so that a burst needs few customers (each
    costs two password hashes, about 0.4 s here)."""
    with started_shop(shop_databases, tmp_path, step_timeout_s=20.0, max_open_orders=50) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_product(shop: RunningShop, admin: str, *, stock: int, price_cents: int = 1000) -> str:
    with shop.client() as http:
        r = http.post(
            f"{shop.urls['products']}/products",
            headers=auth(admin),
            json={
                "name": "Thing",
                "category": "things",
                "price_cents": price_cents,
                "stock": stock,
            },
        )
        assert r.status_code == 201, r.text
        return r.json()["product_id"]


def wait_known_to_orders(shop: RunningShop, product_id: str) -> None:
    """The orders service learns of products from events; wait until it has."""
    with psycopg.connect(shop.databases.url("orders"), autocommit=True) as conn:
        wait_until_sync(
            lambda: conn.execute(
                "SELECT 1 FROM orders.product WHERE product_id = %s", [product_id]
            ).fetchone(),
            within=20,
            failing=lambda: "orders never heard of the product",
        )


def wait_all_final(
    shop: RunningShop, token: str, order_ids: list[str], within_s: float = 90
) -> dict[str, dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}
    with shop.client() as http:

        def all_final() -> bool:
            for order_id in order_ids:
                if order_id in final:
                    continue
                r = http.get(f"{shop.urls['orders']}/orders/{order_id}", headers=auth(token))
                assert r.status_code == 200, r.text
                if r.json()["status"] in ("confirmed", "cancelled"):
                    final[order_id] = r.json()
            return len(final) == len(order_ids)

        wait_until_sync(
            all_final,
            within=within_s,
            interval=0.2,
            failing=lambda: f"{len(order_ids) - len(final)} unfinished",
        )
    return final


def test_demo_scenario_every_saga_path_ends_as_expected(shop: RunningShop) -> None:
    assert run_demo(
        shop.urls,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        saga_step_timeout_s=SAGA_STEP_TIMEOUT,
    )


def test_demo_scenario_with_the_orders_database_on_a_second_server(
    server_url: str, second_server: RestartablePostgres, tmp_path: Path
) -> None:
    orders_db = make_conninfo(second_server.url, dbname=f"shop_orders_{uuid.uuid4().hex[:8]}")
    env = {"SHOP_DATABASE_URL_ORDERS": orders_db}
    with (
        made_shop_databases(server_url, "databases", env=env) as databases,
        started_shop(databases, tmp_path) as running,
    ):
        assert databases.url("orders") == orders_db
        assert run_demo(
            running.urls,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            saga_step_timeout_s=SAGA_STEP_TIMEOUT,
        )


async def place_many(shop: RunningShop, tokens: list[str], product_id: str, n: int) -> list[str]:
    async with httpx.AsyncClient(timeout=60) as http:

        async def place(i: int) -> str:
            # As a real client would: a 503 (no database connection free within the
            # service's 5 s, on a loaded machine) is retried after its Retry-After,
            # with the same Idempotency-Key so that nothing is placed twice.
            headers = auth(tokens[i % len(tokens)]) | {"Idempotency-Key": str(uuid.uuid4())}
            for _ in range(10):
                r = await http.post(
                    f"{shop.urls['orders']}/orders",
                    headers=headers,
                    json={
                        "lines": [{"product_id": product_id, "quantity": 1}],
                        "card_token": "tok_visa",
                    },
                )
                if r.status_code != 503:
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            assert r.status_code == 202, r.text
            return r.json()["order_id"]

        return list(await asyncio.gather(*(place(i) for i in range(n))))


def payments_summary(shop: RunningShop, admin: str) -> dict[str, int]:
    with shop.client() as http:
        r = http.get(f"{shop.urls['payments']}/payments/summary", headers=auth(admin))
        assert r.status_code == 200, r.text
        return r.json()


def test_two_hundred_concurrent_orders_for_ten_units_never_oversell(
    patient_shop: RunningShop,
) -> None:
    shop = patient_shop
    admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product_id = create_product(shop, admin, stock=10, price_cents=1500)
    wait_known_to_orders(shop, product_id)
    # Each customer may have max_open_orders in the saga at once: 4 place 50 each.
    customers = [shop.customer() for _ in range(math.ceil(200 / shop.max_open_orders))]
    order_ids = asyncio.run(place_many(shop, customers, product_id, 200))
    final = wait_all_final(shop, admin, order_ids)
    confirmed = [o for o in final.values() if o["status"] == "confirmed"]
    assert len(confirmed) == 10
    assert all(
        "out of stock" in (o["reason"] or "") for o in final.values() if o["status"] == "cancelled"
    )
    with shop.client() as http:
        product = http.get(
            f"{shop.urls['products']}/products/{product_id}", headers=auth(admin)
        ).json()
    assert product["stock"] == 0
    # Money is conserved: what was captured minus what was refunded is what the
    # confirmed orders cost.
    summary = payments_summary(shop, admin)
    assert summary["captured_cents"] - summary["refunded_cents"] == 10 * 1500
    assert summary["net_cents"] == sum(o["total_cents"] for o in confirmed)


def test_workers_killed_mid_saga_and_restarted_finish_every_saga(
    patient_shop: RunningShop,
) -> None:
    shop = patient_shop
    admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product_id = create_product(shop, admin, stock=1000, price_cents=700)
    wait_known_to_orders(shop, product_id)
    customers = [shop.customer() for _ in range(math.ceil(40 / shop.max_open_orders))]
    order_ids = asyncio.run(place_many(shop, customers, product_id, 40))
    # Crash every worker while the sagas are in progress, then bring them back.
    for name in ("orders-worker-1", "products-worker-1", "payments-worker-1"):
        shop.supervisor.kill(name)
    time.sleep(0.5)
    for process in processes(replicas=1):
        if process.role == "worker":
            shop.supervisor.start(process, shop.env(process))
    final = wait_all_final(shop, admin, order_ids, within_s=120)
    confirmed = [o for o in final.values() if o["status"] == "confirmed"]
    cancelled = [o for o in final.values() if o["status"] == "cancelled"]
    assert confirmed, "no saga survived the crash"
    # A step held by a dead worker comes back when its lease runs out; a saga whose
    # step timeout fired first (the restart is slow on a loaded machine) was
    # compensated instead. Either way, stock and
    # money must add up once the compensations have run.
    assert all("timed out" in o["reason"] for o in cancelled)
    wait_stock(shop, admin, product_id, 1000 - len(confirmed))
    wait_net_cents(shop, admin, 700 * len(confirmed))


def wait_stock(shop: RunningShop, admin: str, product_id: str, expected: int) -> None:
    url = f"{shop.urls['products']}/products/{product_id}"
    with shop.client() as http:

        def stock() -> int:
            return int(http.get(url, headers=auth(admin)).json()["stock"])

        wait_until_sync(
            lambda: stock() == expected,
            within=30,
            interval=0.2,
            failing=lambda: f"stock {stock()}, expected {expected}",
        )


def wait_net_cents(shop: RunningShop, admin: str, expected: int) -> None:
    def net() -> int:
        return int(payments_summary(shop, admin)["net_cents"])

    wait_until_sync(
        lambda: net() == expected,
        within=30,
        interval=0.2,
        failing=lambda: f"net {net()}, expected {expected}",
    )


def test_http_refuses_bad_input_and_other_customers_orders(shop: RunningShop) -> None:
    admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    product_id = create_product(shop, admin, stock=5)
    wait_known_to_orders(shop, product_id)
    alice, bob = shop.customer(), shop.customer()
    orders = f"{shop.urls['orders']}/orders"
    with shop.client() as http:
        assert http.post(orders, json={}).status_code == 401
        bad_bodies: list[tuple[dict[str, Any], int]] = [
            ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
            (
                {"json": {"lines": [{"product_id": product_id, "quantity": 0}], "card_token": "t"}},
                422,
            ),
            (
                {
                    "json": {
                        "lines": [{"product_id": product_id, "quantity": -1}],
                        "card_token": "t",
                    }
                },
                422,
            ),
            (
                {
                    "json": {
                        "lines": [{"product_id": str(uuid.uuid4()), "quantity": 1}],
                        "card_token": "t",
                    }
                },
                422,
            ),
            (
                {
                    "json": {
                        "lines": [{"product_id": product_id, "quantity": "2"}],
                        "card_token": "t",
                    }
                },
                422,
            ),
            ({"json": {"lines": "all of them", "card_token": "t"}}, 422),
            (
                {
                    "content": b'{"lines": [' + b" " * (10 * 1024 * 1024) + b"]}",
                    "headers": {"content-type": "application/json"},
                },
                413,
            ),
        ]
        for kwargs, status in bad_bodies:
            headers = {**auth(alice), **kwargs.pop("headers", {})}
            r = http.post(orders, headers=headers, **kwargs)
            assert r.status_code == status, (status, r.status_code, r.text[:200])
            assert "error" in r.json()
        with psycopg.connect(shop.databases.url("orders")) as conn:
            assert conn.execute("SELECT count(*) FROM orders.order").fetchone() == (0,)

        r = http.post(
            orders,
            headers=auth(alice),
            json={"lines": [{"product_id": product_id, "quantity": 1}], "card_token": "tok_visa"},
        )
        assert r.status_code == 202
        order_id = r.json()["order_id"]
        assert http.get(f"{orders}/{order_id}", headers=auth(bob)).status_code == 404
        assert http.get(f"{orders}/{order_id}", headers=auth(alice)).status_code == 200
        assert http.get(f"{orders}/{order_id}").status_code == 401
