"""Shop fixtures: a fresh database with every service's schema and roles, per test.

The shop schema is migrated once per session into a template, cloned per test.
Services run in-process here (apps through ASGI, workers as tasks), each as its
own database role; tests/shop/e2e runs them as real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier import Courier, Worker, links
from pgcourier.message import build_outgoing
from services.shared import topology_db as _topology
from services.shared.auth import Principal, SigningKey, token_issue
from services.shared.contracts import TOPIC_BINDINGS, contract
from services.shared.database import role_url, shop_migrate
from services.shared.roles import role_name
from services.shared.settings import ServiceSettings
from services.shared.topology_db import ShopDatabases
from services.users import passwords
from tests.helpers import skip_unless_logical_replication
from tests.links_fixtures import drop_slots, drop_subscriptions

# The tests' own key pair, fixed so that every process of a test run agrees on it.
TEST_SIGNING_KEY = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TEST_PUBLIC_KEYS = {TEST_SIGNING_KEY.kid: TEST_SIGNING_KEY.public_key}
SERVICE_SECRET = "test-service-secret-" + "x" * 32
ADMIN_EMAIL = "admin@shop.test"
ADMIN_PASSWORD = "admin-password-1"
# The service roles' passwords on the test server (roles are the cluster's: every test
# database shares them), as runner.py gives each role its own.
ROLE_PASSWORDS = {s: f"test-{s}-db-password" for s in ("users", "products", "orders", "payments")}
# Shorter leases and backoffs than the shop's, so that tests may use short saga step
# timeouts (orders refuses a step timeout under 1.5 x (lease + first backoff)).
TEST_LEASE_S = 0.5
TEST_BACKOFF_S = 0.1
TEST_STEP_TIMEOUT_S = 2.0


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its lowest cost for the services run in this process: a hash at the
    shop's cost (RFC 9106's second recommendation, 64 MiB) takes 0.18 s of CPU here,
    and each register, login and admin start pays one; at the lowest, 1.5 ms. The
    hashes are argon2id all the same. Services run as processes (test_e2e) keep the
    real cost."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture(scope="session")
def shop_template_url(server_url: str) -> Iterator[str]:
    name = f"pgcourier_shop_tpl_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    asyncio.run(shop_migrate(url, role_passwords=ROLE_PASSWORDS))
    with psycopg.connect(url, autocommit=True) as conn:
        for queue in ("orders_inbox", "products_inbox", "payments_inbox"):
            conn.execute(
                "SELECT pgcourier.queue_create(%s, visibility_timeout_s => %s,"
                " max_attempts => 10, backoff_base_s => %s, backoff_max_s => 30)",
                [queue, TEST_LEASE_S, TEST_BACKOFF_S],
            )
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def shop_url(server_url: str, shop_template_url: str) -> Iterator[str]:
    """Admin conninfo of a fresh, fully migrated shop database."""
    name = f"pgcourier_shop_{uuid.uuid4().hex[:12]}"
    template = str(conninfo_to_dict(shop_template_url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def service_settings(service: str, database_url: str) -> ServiceSettings:
    """A service's settings as the tests run it, connecting with database_url."""
    return ServiceSettings(
        service=service,
        database_url=database_url,
        token_keys=TEST_PUBLIC_KEYS,
        service_secret=SERVICE_SECRET,
        signing_key=TEST_SIGNING_KEY if service == "users" else None,
        saga_step_timeout_s=TEST_STEP_TIMEOUT_S,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
    )


@pytest.fixture
def settings_for(shop_url: str) -> Callable[[str], ServiceSettings]:
    def make(service: str) -> ServiceSettings:
        return ServiceSettings(
            service=service,
            database_url=role_url(shop_url, service, ROLE_PASSWORDS[service]),
            token_keys=TEST_PUBLIC_KEYS,
            service_secret=SERVICE_SECRET,
            # Only the users service holds the private key, as in runner.py.
            signing_key=TEST_SIGNING_KEY if service == "users" else None,
            saga_step_timeout_s=TEST_STEP_TIMEOUT_S,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
        )

    return make


def token_for(user_id: str, role: str = "customer", *, version: int = 1) -> dict[str, str]:
    """Authorization header for a user, signed like the users service signs."""
    token = token_issue(Principal(user_id, role, version), key=TEST_SIGNING_KEY, ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def serve_app(app) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for a service app, with its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@contextlib.asynccontextmanager
async def run_service_worker(
    settings: ServiceSettings, setup: Callable[[Worker, ServiceSettings], None]
) -> AsyncIterator[Worker]:
    """A service's worker as a task, connected as the service's role."""
    async with Courier(settings.database_url, pool_max_size=5) as courier:
        worker = Worker(courier, concurrency=20, batch_size=20, poll_interval=0.5)
        setup(worker, settings)
        async with worker.running():
            yield worker


class Acting:
    """Sends through the admin's pool as `service`'s role: Postgres stamps what it sends
    with that role, so the consumer takes it for that service's message."""

    def __init__(self, bus: Courier, service: str) -> None:
        self.bus = bus
        self.role = role_name(service)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.bus.pool.connection() as conn:
            await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))
            yield conn

    async def send(self, queue: str, payload: Any, **options: Any) -> int | None:
        if await self._arrives_over_a_link():
            return await self._arrive(queue, payload, **options)
        async with self.connection() as conn:
            return await self.bus.send(queue, payload, conn=conn, **options)

    async def _arrives_over_a_link(self) -> bool:
        """In a service's own database (the database-per-service topology), another
        service's messages arrive over a link, not from a role of this database."""
        async with self.bus.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT pgcourier.node_name() = %s", [self.role.removesuffix("_svc")]
            )
            own = await cur.fetchone()
            cur = await conn.execute("SELECT count(*) FROM pgcourier.node")
            named = await cur.fetchone()
        return bool(named and named[0]) and not (own and own[0])

    async def send_raw(self, queue: str, message: Any, headers: dict[str, Any]) -> None:
        """As another pgmq client would send it (pgmq.send, headers as given)."""
        if await self._arrives_over_a_link():
            await self._deliver(queue, json.dumps(message), json.dumps(headers), 0.0)
            return
        await self.execute(
            "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)",
            [queue, json.dumps(message), json.dumps(headers)],
        )

    async def _arrive(self, queue: str, payload: Any, **options: Any) -> int:
        """The row the sending service's database would carry here, delivered as a link
        delivers it: stamped with the sending role and its node."""
        outgoing = build_outgoing(payload, max_payload_bytes=self.bus.max_payload_bytes, **options)
        return await self._deliver(queue, outgoing.payload, outgoing.headers, outgoing.delay_s)

    async def _deliver(self, queue: str, message: str, headers: str, delay_s: float) -> int:
        Acting._arrivals += 1
        async with self.bus.pool.connection() as conn:
            cur = await conn.execute("SELECT pgcourier.node_name(), pg_current_xact_id()::text")
            row = await cur.fetchone()
            assert row is not None
            here, xid = row
            await links.deliver_rows(
                conn,
                [
                    (
                        Acting._arrivals,
                        self.role.removesuffix("_svc"),
                        here,
                        queue,
                        message,
                        headers,
                        delay_s,
                        self.role,
                        datetime.now(UTC),
                        xid,
                        None,
                        None,
                    )
                ],
            )
        return Acting._arrivals

    _arrivals = 0

    async def publish(self, topic: str, payload: Any, **options: Any) -> list[str]:
        if await self._arrives_over_a_link():
            # The binding lives in the publisher's database: the copies that arrive here
            # are those of this database's queues the contracts bind to the topic.
            queues = []
            for pattern, queue in TOPIC_BINDINGS:
                if re.fullmatch(_topic_regex(pattern), topic) and await self._local(queue):
                    await self._arrive(queue, payload, type=topic, **options)
                    queues.append(queue)
            return queues
        async with self.connection() as conn:
            return await self.bus.publish(topic, payload, conn=conn, **options)

    async def _local(self, queue: str) -> bool:
        async with self.bus.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM pgcourier.queue WHERE queue_name = %s", [queue])
            return await cur.fetchone() is not None

    async def execute(self, statement: str, params: Any = None) -> None:
        async with self.connection() as conn:
            await conn.execute(statement, params)


def _topic_regex(pattern: str) -> str:
    return re.escape(pattern).replace(r"\*", "[^.]+").replace(r"\#", ".*")


def acting(bus: Courier, service: str) -> Acting:
    return Acting(bus, service)


def sender_of(kind: str) -> str:
    """The service whose messages of `kind` the contracts accept."""
    return contract(kind).sender


def drop_shop_databases(databases: ShopDatabases) -> None:
    """Drops a shop's databases, wherever they are: every subscription first (each in
    its own database; a slot in use cannot be dropped), then each database's slots,
    then the databases. A slot left behind would keep its server's WAL forever."""
    existing = []
    for url in databases.distinct_urls():
        server = make_conninfo(url, dbname="postgres")
        name = str(conninfo_to_dict(url)["dbname"])
        with psycopg.connect(server, autocommit=True) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                existing.append((server, name, url))
    for _, _, url in existing:
        drop_subscriptions(url)
    for server, name, _ in existing:
        drop_slots(server, [name])
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def made_shop_databases(
    server_url: str,
    topology: str,
    *,
    env: dict[str, str] | None = None,
    link_mode: str = "replication",
) -> Iterator[ShopDatabases]:
    """A fresh, migrated shop in a topology (runner.py's way, with the tests' short
    leases and backoffs), dropped afterwards whatever happens. env: as runner.py
    reads it (SHOP_DATABASE_URL_<SERVICE> puts a service elsewhere)."""
    if topology == "databases" and link_mode == "replication":
        skip_unless_logical_replication(server_url)
    base = f"pgcourier_shop_{uuid.uuid4().hex[:12]}"
    url = make_conninfo(server_url, dbname=base)
    databases = _topology.shop_databases(url, topology=topology, link_mode=link_mode, env=env)
    if topology == "one":
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(base)))
    try:
        asyncio.run(
            shop_migrate(
                databases,
                role_passwords=ROLE_PASSWORDS,
                queue_settings=(TEST_LEASE_S, 10, TEST_BACKOFF_S, 30.0),
            )
        )
        yield databases
    finally:
        drop_shop_databases(databases)


@pytest.fixture(params=["databases", "relay", "one"])
def shop_databases(request: pytest.FixtureRequest, server_url: str) -> Iterator[ShopDatabases]:
    """A fresh shop in each topology: a database per service linked by logical
    replication (what runner.py starts by default), the same linked by relays, and
    one database for all."""
    topology = "one" if request.param == "one" else "databases"
    link_mode = "relay" if request.param == "relay" else "replication"
    with made_shop_databases(server_url, topology, link_mode=link_mode) as databases:
        yield databases


@pytest.fixture(scope="session")
def per_service_templates(server_url: str) -> Iterator[ShopDatabases]:
    """Each service's database as the database-per-service topology makes it (its
    schema, its inbox, its outbox, the remote queues it sends to), to be cloned per
    test. The links are taken down first: a database read by a walsender cannot be a
    template, and a clone would have no subscription anyway (what it sends to other
    services stays in its outbox, which tests of one service can read)."""
    with made_shop_databases(server_url, "databases") as databases:
        drop_links_only(databases)
        yield databases


def drop_links_only(databases: ShopDatabases) -> None:
    """Subscriptions, then slots; the databases stay."""
    for url in databases.distinct_urls():
        drop_subscriptions(url)
    for url in databases.distinct_urls():
        drop_slots(make_conninfo(url, dbname="postgres"), [str(conninfo_to_dict(url)["dbname"])])


@contextlib.contextmanager
def cloned(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh database cloned from template_url; dropped afterwards."""
    name = f"pgcourier_shop_{uuid.uuid4().hex[:12]}"
    template = str(conninfo_to_dict(template_url)["dbname"])
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def service_in_both_topologies(service: str, what: str) -> Any:
    """A `shop_url` fixture for a module testing one service: each test runs in the one
    database of every service, and in the service's own database, cloned from the
    database-per-service topology's, where other services' messages arrive as a link
    delivers them (Acting) and what it sends to them waits in its outbox. `what`
    documents the module's use of it."""

    @pytest.fixture(params=["one database", "its own database"])
    def shop_url(
        request: pytest.FixtureRequest, server_url: str, shop_template_url: str
    ) -> Iterator[str]:
        if request.param == "one database":
            template = shop_template_url
        else:
            skip_unless_logical_replication(server_url)
            template = request.getfixturevalue("per_service_templates").url(service)
        with cloned(server_url, template) as url:
            yield url

    shop_url.__doc__ = f"The {service} service in each topology ({what})."
    return shop_url
