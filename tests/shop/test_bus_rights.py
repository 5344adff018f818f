"""Each service role can do on the bus exactly what the contracts say, and nothing else.

Connects as every service role and tries every operation on every queue: sending
is allowed only where a contract names the service as the sender, consuming only
on the service's own inbox; everything else ends in `permission denied` (or, for
the shared tables, in rows the role cannot see or write).
"""

from __future__ import annotations

import psycopg
import pytest

from services.shared import contracts
from services.shared.database import role_url
from tests.shop.conftest import ROLE_PASSWORDS

SERVICES = ("users", "products", "orders", "payments")
QUEUES = sorted(contracts.CONSUMERS)


def _allowed(
    statement: str, url: str, params: object = None, *, false_is_refusal: bool = False
) -> bool:
    """Runs the statement in a transaction that is rolled back; False if refused (or, with
    false_is_refusal, if it answered a plain false: pgmq.drop_queue on a table the role
    cannot see does nothing and says false)."""
    with psycopg.connect(url) as conn:
        try:
            with conn.transaction(force_rollback=True):
                cur = conn.execute(statement, params)  # type: ignore[arg-type]
                row = cur.fetchone() if cur.description else None
        except psycopg.errors.InsufficientPrivilege:
            return False
    return not (false_is_refusal and row == (False,))


def _may_send(service: str, queue: str) -> bool:
    return any(c.sender == service and c.queue == queue for c in contracts.CONTRACTS)


@pytest.mark.parametrize("service", SERVICES)
def test_a_role_sends_exactly_where_its_contracts_say(shop_url: str, service: str) -> None:
    url = role_url(shop_url, service, ROLE_PASSWORDS[service])
    for queue in QUEUES:
        sent = _allowed("SELECT pgmq.send(%s, '{}'::jsonb)", url, [queue])
        assert sent == _may_send(service, queue), (service, queue)


CONSUMER_ONLY = [
    "SELECT * FROM pgmq.read(%(q)s, 30, 1)",
    "SELECT pgmq.set_vt(%(q)s, 1, 3600)",
    "SELECT pgmq.delete(%(q)s, 1::bigint)",
    "SELECT pgmq.archive(%(q)s, 1::bigint)",
    "SELECT message FROM pgmq.q_{q}",
    "DELETE FROM pgmq.q_{q}",
]

NOBODY = [
    "SELECT pgmq.purge_queue(%(q)s)",
    "SELECT pgmq.drop_queue(%(q)s)",
    "SELECT pgmq.bind_topic('#', %(q)s)",
    "SELECT pgcourier.queue_create(%(q)s, 1)",
    "SELECT pgcourier.grant_consume(%(q)s, current_user)",
    "UPDATE pgcourier.queue SET max_attempts = 1 WHERE queue_name = %(q)s",
    "DELETE FROM pgmq.topic_bindings",
    "DELETE FROM pgcourier.schema_migration",
    "INSERT INTO pgmq.q_{q} (vt, message, headers, sender) VALUES (now(), '{}', '{}', 'x')",
]


@pytest.mark.parametrize("service", SERVICES)
def test_only_the_owning_service_consumes_its_inbox_and_nobody_administers_the_bus(
    shop_url: str, service: str
) -> None:
    url = role_url(shop_url, service, ROLE_PASSWORDS[service])
    for queue in QUEUES:
        mine = contracts.CONSUMERS[queue] == service
        for statement in CONSUMER_ONLY:
            text = statement.replace("{q}", queue)
            assert _allowed(text, url, {"q": queue}) == mine, (service, queue, statement)
        for statement in NOBODY:
            text = statement.replace("{q}", queue)
            refused = not _allowed(text, url, {"q": queue}, false_is_refusal=True)
            assert refused, (service, queue, statement)


def test_users_sends_only_user_changed_and_nothing_else_on_the_bus() -> None:
    # Its role may send (to the inboxes user.changed is bound to) and do nothing else:
    # the tests above check the sends and the refusals of everything else.
    sent = {c.type for c in contracts.CONTRACTS if c.sender == "users"}
    assert sent == {contracts.USER_CHANGED}
    assert "users" not in contracts.CONSUMERS.values()


@pytest.mark.parametrize("service", ["products", "orders", "payments"])
def test_the_shared_tables_show_a_role_only_its_own_inbox_rows(shop_url: str, service: str) -> None:
    with psycopg.connect(shop_url, autocommit=True) as conn:
        for queue in QUEUES:
            conn.execute(
                "INSERT INTO pgcourier.inbox (consumer, message_id) VALUES (%s, 'x')", [queue]
            )
            conn.execute(
                "INSERT INTO pgcourier.dead_letter (queue_name, msg_id, enqueued_at, attempts)"
                " VALUES (%s, 1, now(), 1)",
                [queue],
            )
    mine = next(q for q, s in contracts.CONSUMERS.items() if s == service)
    with psycopg.connect(
        role_url(shop_url, service, ROLE_PASSWORDS[service]), autocommit=True
    ) as conn:
        inbox = conn.execute("SELECT consumer FROM pgcourier.inbox").fetchall()
        dead = conn.execute("SELECT queue_name FROM pgcourier.dead_letter").fetchall()
        deleted = conn.execute("DELETE FROM pgcourier.inbox WHERE consumer <> %s", [mine])
        for queue in QUEUES:
            if queue == mine:
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(
                    "INSERT INTO pgcourier.inbox (consumer, message_id) VALUES (%s, 'y')", [queue]
                )
    assert inbox == [(mine,)] and dead == [(mine,)] and deleted.rowcount == 0
