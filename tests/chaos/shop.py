"""The whole shop as real processes on free ports, against fresh databases.

Started as runner.py starts it (services.topology, services.supervisor) in either
topology: a database per service linked by logical replication or relays, with the
links keeper, or one database for all. Two worker replicas per consuming service, so
that one replica's death leaves the other consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from runner import kept_keys
from services.shared.database import new_role_passwords, shop_migrate
from services.shared.settings import SERVICES, ServiceSettings
from services.shared.topology_db import ShopDatabases, shop_databases
from services.supervisor import Supervisor
from services.topology import LINKS_KEEPER, ServiceProcess, process_env, processes

log = logging.getLogger("chaos")

ADMIN_EMAIL = "admin@shop.chaos"
ADMIN_PASSWORD = "admin-password-1"
CUSTOMER_PASSWORD = "password-123"
REPLICAS = 2
# The service roles' passwords on the suite's server.
ROLE_PASSWORDS = new_role_passwords()
# The shop's own default, so the suite runs what users run.
DEFAULT_STEP_TIMEOUT_S: float = ServiceSettings.__dataclass_fields__["saga_step_timeout_s"].default
# Every database of a run starts with this and the run's pid: pgcourier_chaos_<pid>_<id>
# (one database), pgcourier_chaos_<pid>_<id>_<service> (a database per service).
DATABASE_PREFIX = "pgcourier_chaos_"
_RUN_DATABASE = re.compile(rf"^{DATABASE_PREFIX}(\d+)_[0-9a-f]+(_[a-z]+)?$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def database_name(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname") or "")


def _admin(server_url: str, *, within_s: float = 60) -> psycopg.Connection:
    """A connection to the server, waiting for it while it restarts (a run that failed
    may have left it recovering from the suite's last crash)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return psycopg.connect(server_url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def drop_replication(server_url: str, urls: list[str], *, within_s: float = 30) -> None:
    """Drops the links' subscriptions (each in its own database), then the slots they
    used: a slot left behind would hold the server's WAL forever. A slot whose
    walsender has not yet noticed its subscription is gone is still active for a
    moment: its walsender is terminated, and the drop retried until within_s."""
    names = [database_name(url) for url in urls]
    with _admin(server_url) as admin:
        present = {
            name
            for (name,) in admin.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names]
            ).fetchall()
        }
        for url in urls:
            if database_name(url) not in present:
                continue
            with psycopg.connect(url, autocommit=True) as conn:
                subscriptions = conn.execute(
                    "SELECT subname FROM pg_subscription WHERE subdbid ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
                for (sub,) in subscriptions:
                    ident = sql.Identifier(sub)
                    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                    conn.execute(
                        sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident)
                    )
                    conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        deadline = time.monotonic() + within_s
        while True:
            slots = admin.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = ANY(%s)",
                [names],
            ).fetchall()
            if not slots:
                return
            for slot, active_pid in slots:
                if active_pid is not None:
                    admin.execute("SELECT pg_terminate_backend(%s)", [active_pid])
                    continue
                with contextlib.suppress(psycopg.errors.ObjectInUse):
                    admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication slots still in use: {slots}")
            time.sleep(0.1)


def drop_shop(server_url: str, urls: list[str]) -> None:
    """Drops a shop's databases, its links' subscriptions and slots first."""
    drop_replication(server_url, urls)
    with _admin(server_url) as admin:
        for url in urls:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database_name(url))
                )
            )


def drop_leftovers(server_url: str) -> list[str]:
    """Drops what earlier runs on this server left behind (killed before their cleanup,
    or kept with --keep-database): databases named like a run's whose process is gone,
    with their subscriptions and slots. Returns the databases dropped."""
    with _admin(server_url) as admin:
        found = [
            name
            for (name,) in admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                [DATABASE_PREFIX.replace("_", r"\_") + "%"],
            ).fetchall()
        ]
    gone = []
    for name in found:
        match = _RUN_DATABASE.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        gone.append(name)
    if gone:
        drop_shop(server_url, [make_conninfo(server_url, dbname=name) for name in gone])
    return gone


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def fresh_shop(
    server_url: str,
    *,
    topology: str = "databases",
    link_mode: str = "replication",
    keep: bool = False,
    role_passwords: Mapping[str, str | None] = ROLE_PASSWORDS,
) -> Iterator[ShopDatabases]:
    """New databases with the shop migrated into them, as runner.py migrates: a database
    per service on server_url's server, linked (topology databases), or one database.
    Dropped afterwards, failure or not (subscriptions, then slots, then databases),
    unless keep. role_passwords: the service roles' (the server's, not the shop's: on
    a server other tests use, theirs)."""
    base = f"{DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    # Every database on the server the suite restarts: SHOP_DATABASE_URL_<SERVICE> is
    # not read, as another server would not be crashed with it.
    databases = shop_databases(
        make_conninfo(server_url, dbname=base), topology=topology, link_mode=link_mode
    )
    try:
        if topology == "one":
            with _admin(server_url) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(base)))
        asyncio.run(shop_migrate(databases, role_passwords=role_passwords))
        yield databases
    finally:
        if not keep:
            drop_shop(server_url, databases.distinct_urls())
        elif databases.topology == "databases":
            log.warning(
                "kept: its replication slots hold the server's WAL until the next run drops them"
            )


@dataclass
class Exit:
    instance: str
    pid: int
    reason: str
    at: float  # time.monotonic()


@dataclass
class RunningShop:
    databases: ShopDatabases
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
            self.databases,
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
    def processes(self) -> list[ServiceProcess]:
        """What runner.py starts in this topology (the links keeper with a database per
        service)."""
        return processes(replicas=REPLICAS, topology=self.databases.topology)

    @property
    def workers(self) -> list[str]:
        return [p.instance for p in self.processes if p.role == "worker"]

    @property
    def keeper(self) -> str | None:
        """The links keeper's instance, if this topology has one."""
        return LINKS_KEEPER.instance if LINKS_KEEPER in self.processes else None

    def url(self, service: str) -> str:
        """The owner's URL of the service's database."""
        return self.databases.url(service)

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
def running_shop(
    databases: ShopDatabases, log_dir: Path, *, step_timeout_s: float
) -> Iterator[RunningShop]:
    ports = {s: free_port() for s in SERVICES}
    shop = RunningShop(
        databases,
        {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
        Supervisor(log_dir=log_dir),
        ports,
        log_dir,
        step_timeout_s,
    )
    try:
        for process in shop.processes:
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
    with psycopg.connect(shop.url("orders")) as conn:
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
