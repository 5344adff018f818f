"""In the database-per-service topology, each service role reaches only its own
database, and there does on the bus exactly what the contracts say.

test_roles and test_bus_rights prove the same of the one-database topology, where
every role meets every queue; here the other services' queues are remote queues
(reached through the outbox) and their databases are closed to the role.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from services.shared import contracts
from services.shared.database import role_url
from services.shared.topology_db import ShopDatabases
from tests.helpers import skip_unless_logical_replication
from tests.shop.conftest import ROLE_PASSWORDS, cloned

SERVICES = ("users", "products", "orders", "payments")
QUEUES = sorted(contracts.CONSUMERS)

# What the bus's owner alone may do to links: declare remote queues, grant, prune,
# forge what a receiver remembers, rewrite or drop outbox rows, publish or subscribe.
LINKS_OWNER_ONLY = [
    "SELECT pgcourier.remote_queue_declare('elsewhere_inbox', 'elsewhere')",
    "SELECT pgcourier.grant_send(%(q)s, current_user)",
    "SELECT pgcourier.bind_topic('#', %(q)s)",
    "SELECT pgcourier.link_prune()",
    "INSERT INTO pgcourier.remote_grant (queue_name, role_name) VALUES (%(q)s, current_user)",
    "INSERT INTO pgcourier.link_received (origin, outbox_id, xid) VALUES ('orders', 1, '1')",
    "DELETE FROM pgcourier.link_received",
    "UPDATE pgcourier.outbox SET queue_name = %(q)s",
    "DELETE FROM pgcourier.outbox",
    "UPDATE pgcourier.remote_queue SET node = 'elsewhere'",
    "INSERT INTO pgcourier.outbox (queue_name, message, headers, delay_s, sender)"
    " VALUES (%(q)s, '{}', '{}', 0, 'orders_svc')",
    "CREATE PUBLICATION sneaky FOR TABLE pgcourier.outbox",
]


@pytest.fixture(scope="module")
def own_databases(server_url: str, per_service_templates: ShopDatabases) -> Iterator[dict]:
    """Each service's own database (admin conninfo), cloned from the topology's."""
    skip_unless_logical_replication(server_url)
    with (
        cloned(server_url, per_service_templates.url("users")) as users,
        cloned(server_url, per_service_templates.url("products")) as products,
        cloned(server_url, per_service_templates.url("orders")) as orders,
        cloned(server_url, per_service_templates.url("payments")) as payments,
    ):
        yield {"users": users, "products": products, "orders": orders, "payments": payments}


def as_role(own_databases: dict, service: str, database_of: str | None = None) -> str:
    return role_url(own_databases[database_of or service], service, ROLE_PASSWORDS[service])


def _allowed(statement: str, url: str, params: object = None) -> bool:
    """Runs the statement in a transaction that is rolled back; False if refused. A
    queue this database does not know (not here, not declared remote) is a refusal too."""
    with psycopg.connect(url) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(statement, params)  # type: ignore[arg-type]
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable):
            return False
    return True


def _may_send(service: str, queue: str) -> bool:
    return any(c.sender == service and c.queue == queue for c in contracts.CONTRACTS)


def _is_local(url: str, queue: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(
            conn.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [queue]).fetchone()
        )


@pytest.mark.parametrize("service", SERVICES)
def test_a_role_connects_to_its_own_database_and_is_refused_every_other(
    per_service_templates: ShopDatabases, service: str
) -> None:
    # The databases as the topology made them: a clone gets its database's default
    # privileges (CONNECT for PUBLIC), not the ones shop_migrate set.
    made = {s: per_service_templates.url(s) for s in SERVICES}
    with psycopg.connect(as_role(made, service)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (f"{service}_svc",)
    for other in SERVICES:
        if other == service:
            continue
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(as_role(made, service, database_of=other)).close()


@pytest.mark.parametrize("service", SERVICES)
def test_from_its_own_database_a_role_sends_exactly_where_its_contracts_say(
    own_databases: dict, service: str
) -> None:
    url = as_role(own_databases, service)
    for queue in QUEUES:
        if _is_local(own_databases[service], queue):
            sent = _allowed("SELECT pgmq.send(%s, '{}'::jsonb)", url, [queue])
        else:
            sent = _allowed(
                "INSERT INTO pgcourier.outbox (queue_name, message, headers, delay_s)"
                " VALUES (%s, '{}', '{}', 0)",
                url,
                [queue],
            )
        assert sent == _may_send(service, queue), (service, queue)


@pytest.mark.parametrize("service", SERVICES)
def test_in_its_own_database_a_role_cannot_administer_links_or_forge_their_rows(
    own_databases: dict, service: str
) -> None:
    url = as_role(own_databases, service)
    for queue in QUEUES:
        for statement in LINKS_OWNER_ONLY:
            assert not _allowed(statement, url, {"q": queue}), (service, queue, statement)


@pytest.mark.parametrize("service", ["products", "orders", "payments"])
def test_in_its_own_database_only_the_service_consumes_its_inbox_and_cannot_purge_it(
    own_databases: dict, service: str
) -> None:
    inbox = next(q for q, s in contracts.CONSUMERS.items() if s == service)
    url = as_role(own_databases, service)
    for statement in (
        "SELECT * FROM pgmq.read(%(q)s, 30, 1)",
        "SELECT pgmq.set_vt(%(q)s, 1, 3600)",
        "SELECT pgmq.delete(%(q)s, 1::bigint)",
        "SELECT pgmq.archive(%(q)s, 1::bigint)",
    ):
        assert _allowed(statement, url, {"q": inbox}), (service, statement)
    for statement in (
        "SELECT pgmq.purge_queue(%(q)s)",
        "SELECT pgcourier.queue_create(%(q)s, 1)",
        "UPDATE pgcourier.queue SET max_attempts = 1 WHERE queue_name = %(q)s",
        "DELETE FROM pgcourier.schema_migration",
    ):
        assert not _allowed(statement, url, {"q": inbox}), (service, statement)


def test_a_role_sees_only_the_outbox_rows_it_sent(own_databases: dict) -> None:
    orders = own_databases["orders"]
    with psycopg.connect(as_role(own_databases, "orders"), autocommit=True) as conn:
        sent = conn.execute(
            "INSERT INTO pgcourier.outbox (queue_name, message, headers, delay_s)"
            " VALUES ('payments_inbox', '{}', '{}', 0) RETURNING id, sender"
        ).fetchone()
    assert sent is not None and sent[1] == "orders_svc"
    with psycopg.connect(orders, autocommit=True) as admin:
        # A row another role of this database sent (the owner, say, for a resync).
        admin.execute(
            "INSERT INTO pgcourier.outbox (queue_name, message, headers, delay_s)"
            " VALUES ('payments_inbox', '{}', '{}', 0)"
        )
        total = admin.execute(
            "SELECT count(*) FROM pgcourier.outbox WHERE forget_below IS NULL"
        ).fetchone()
    with psycopg.connect(as_role(own_databases, "orders")) as conn:
        seen = conn.execute("SELECT id, sender FROM pgcourier.outbox").fetchall()
    assert total == (2,)
    assert seen == [sent]
