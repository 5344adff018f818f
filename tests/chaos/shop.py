"""The whole shop as real processes on free ports, against a fresh database.

Started as tests/shop/test_e2e.py and bench/shop.py start it (services.topology,
services.supervisor), with two worker replicas per consuming service so that one
replica's death leaves the other consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runner import kept_keys
from services.shared.database import new_role_passwords, shop_migrate
from services.shared.settings import ServiceSettings
from services.supervisor import Supervisor
from services.topology import ServiceProcess, process_env, processes

ADMIN_EMAIL = "admin@shop.chaos"
ADMIN_PASSWORD = "admin-password-1"
CUSTOMER_PASSWORD = "password-123"
REPLICAS = 2
# The service roles' passwords on the suite's server.
ROLE_PASSWORDS = new_role_passwords()
# The shop's own default, so the suite runs what users run.
DEFAULT_STEP_TIMEOUT_S: float = ServiceSettings.__dataclass_fields__["saga_step_timeout_s"].default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def fresh_database(server_url: str, *, keep: bool = False) -> Iterator[str]:
    """Admin conninfo of a new database with the shop migrated into it."""
    name = f"pgcourier_chaos_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    asyncio.run(shop_migrate(url, role_passwords=ROLE_PASSWORDS))
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass
class Exit:
    instance: str
    pid: int
    reason: str
    at: float  # time.monotonic()


@dataclass
class RunningShop:
    admin_url: str
    urls: dict[str, str]
    supervisor: Supervisor
    ports: dict[str, int]
    log_dir: Path
    step_timeout_s: float
    # Children that exited and were started again (by the supervisor or, until it does
    # that itself, by `supervise`).
    exits: list[Exit] = field(default_factory=list)

    def env(self, process: ServiceProcess) -> dict[str, str]:
        env = process_env(
            process,
            self.admin_url,
            **kept_keys(self.log_dir / "keys").settings(),
            saga_step_timeout_s=self.step_timeout_s,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            role_passwords=ROLE_PASSWORDS,
            ports=self.ports,
        )
        # Tokens are taken once, at the start, and must outlive the longest run.
        return {**env, "SHOP_TOKEN_TTL": str(7 * 24 * 3600)}

    @property
    def workers(self) -> list[str]:
        return [p.instance for p in processes(replicas=REPLICAS) if p.role == "worker"]

    def pid(self, instance: str) -> int | None:
        """The instance's live pid; None while it waits for its restart."""
        return self.supervisor.pid(instance)

    def supervise(self) -> None:
        """The supervisor restarts crashed children (raising CrashLoopError when one keeps
        crashing); what died is kept for the report."""
        for event in self.supervisor.check():
            if event.kind == "crashed":
                self.exits.append(Exit(event.instance, event.pid, event.detail, time.monotonic()))


@contextlib.contextmanager
def running_shop(admin_url: str, log_dir: Path, *, step_timeout_s: float) -> Iterator[RunningShop]:
    ports = {s: free_port() for s in ("users", "products", "orders", "payments")}
    shop = RunningShop(
        admin_url,
        {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
        Supervisor(log_dir=log_dir),
        ports,
        log_dir,
        step_timeout_s,
    )
    try:
        for process in processes(replicas=REPLICAS):
            shop.supervisor.start(process, shop.env(process))
        shop.supervisor.wait_healthy(shop.urls)
        yield shop
    finally:
        shop.supervisor.stop_all()


def _expect(r: httpx.Response, status: int) -> dict:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
    return r.json()


def login(shop: RunningShop, email: str, password: str) -> str:
    with httpx.Client(timeout=30) as http:
        r = http.post(
            f"{shop.urls['users']}/users/login", json={"email": email, "password": password}
        )
        return _expect(r, 200)["token"]


def register_customers(shop: RunningShop, n: int) -> list[tuple[str, str]]:
    """(email, token) of n new customers."""
    found = []
    with httpx.Client(timeout=30) as http:
        for _ in range(n):
            body = {"email": f"c-{uuid.uuid4().hex[:10]}@shop.chaos", "password": CUSTOMER_PASSWORD}
            _expect(http.post(f"{shop.urls['users']}/users/register", json=body), 201)
            found.append((body["email"], login(shop, body["email"], CUSTOMER_PASSWORD)))
    return found


def create_products(shop: RunningShop, stock_and_price: list[tuple[int, int]]) -> list[str]:
    """Creates the products and waits until the orders service has heard of each."""
    admin = login(shop, ADMIN_EMAIL, ADMIN_PASSWORD)
    ids = []
    with httpx.Client(timeout=30) as http:
        for i, (stock, price) in enumerate(stock_and_price):
            body = {"name": f"Chaos {i}", "category": "chaos", "price_cents": price, "stock": stock}
            r = http.post(f"{shop.urls['products']}/products", headers=auth(admin), json=body)
            ids.append(_expect(r, 201)["product_id"])
    with psycopg.connect(shop.admin_url) as conn:
        deadline = time.monotonic() + 60
        while True:
            row = conn.execute(
                "SELECT count(*) FROM orders.product WHERE product_id = ANY(%s::uuid[])", [ids]
            ).fetchone()
            if row is not None and row[0] == len(ids):
                return ids
            if time.monotonic() > deadline:
                raise RuntimeError("the orders service never heard of the products")
            shop.supervise()
            time.sleep(0.1)
