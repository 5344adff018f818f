"""Per-queue privileges and the stamped sender: no role can act as another.

Each test gets three login roles of its own (a sender, a consumer, an outsider)
with random passwords; the queue's owner is the migrating role.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcourier import Admin, Context, Courier, DatabaseError, Message, Worker
from tests.helpers import scalar, wait_until


@dataclass(frozen=True)
class Role:
    name: str
    url: str


@pytest.fixture
def roles(database_url: str, server_url: str) -> Iterator[dict[str, Role]]:
    suffix = uuid.uuid4().hex[:8]
    made: dict[str, Role] = {}
    with psycopg.connect(server_url, autocommit=True) as conn:
        for kind in ("sender", "consumer", "outsider"):
            name, password = f"{kind}_{suffix}", secrets.token_urlsafe(16)
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            made[kind] = Role(name, make_conninfo(database_url, user=name, password=password))
    yield made
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role.name],
            )
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role.name)))
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role.name)))


@pytest.fixture
async def bus(courier: Courier, roles: dict[str, Role]) -> AsyncIterator[dict[str, Role]]:
    """Queues jobs (sender may send, consumer consumes) and other (outsider consumes)."""
    admin = Admin(courier)
    for queue in ("jobs", "other"):
        await courier.queue_create(queue)
    await admin.grant_send("jobs", roles["sender"].name)
    await admin.grant_consume("jobs", roles["consumer"].name)
    await admin.grant_consume("other", roles["outsider"].name)
    await admin.grant_send("other", roles["outsider"].name)
    yield roles


def _as(role: Role, statement: str, params: object = None) -> None:
    with psycopg.connect(role.url, autocommit=True) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


FORBIDDEN_TO_A_SENDER = [
    "SELECT message FROM pgmq.q_jobs",
    "SELECT * FROM pgmq.read('jobs', 30, 1)",
    "SELECT pgmq.set_vt('jobs', 1, 3600)",
    "SELECT pgmq.delete('jobs', 1::bigint)",
    "SELECT pgmq.archive('jobs', 1::bigint)",
    "SELECT pgmq.purge_queue('jobs')",
    "SELECT pgmq.drop_queue('jobs')",
    "DELETE FROM pgmq.q_jobs",
    "UPDATE pgmq.q_jobs SET vt = now() + interval '1 year'",
    "INSERT INTO pgmq.q_jobs (vt, message, headers, sender) VALUES (now(), '{}', '{}', 'x')",
    "UPDATE pgcourier.queue SET max_attempts = 1",
    "SELECT pgmq.bind_topic('#', 'jobs')",
    "DELETE FROM pgmq.topic_bindings",
    "DELETE FROM pgcourier.schema_migration",
    "SELECT pgcourier.queue_create('jobs', 1)",
    "SELECT pgcourier.queue_drop('jobs')",
    "SELECT pgcourier.grant_consume('jobs', current_user)",
    "SELECT * FROM pgcourier.dead_letter",
    "SELECT * FROM pgcourier.inbox",
]


@pytest.mark.parametrize("statement", FORBIDDEN_TO_A_SENDER)
async def test_a_sender_may_only_insert(bus: dict[str, Role], statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await asyncio.to_thread(_as, bus["sender"], statement)


FORBIDDEN_TO_ANOTHER_QUEUES_CONSUMER = [
    "SELECT message FROM pgmq.q_jobs",
    "SELECT * FROM pgmq.read('jobs', 30, 1)",
    "SELECT pgmq.send('jobs', '{}')",
    "SELECT pgmq.delete('jobs', 1::bigint)",
    "UPDATE pgmq.q_jobs SET vt = now() + interval '1 year'",
    "INSERT INTO pgcourier.inbox (consumer, message_id) VALUES ('jobs', 'x')",
    "INSERT INTO pgcourier.dead_letter (queue_name, msg_id, enqueued_at, attempts)"
    " VALUES ('jobs', 1, now(), 1)",
    "UPDATE pgcourier.queue SET max_attempts = 1 WHERE queue_name = 'other'",
]


@pytest.mark.parametrize("statement", FORBIDDEN_TO_ANOTHER_QUEUES_CONSUMER)
async def test_a_consumer_cannot_touch_another_queue(bus: dict[str, Role], statement: str) -> None:
    with pytest.raises(
        (psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation)
    ) as raised:
        await asyncio.to_thread(_as, bus["outsider"], statement)
    assert "permission denied" in str(raised.value) or "row-level security" in str(raised.value)


async def test_shared_tables_show_each_consumer_only_its_own_queues_rows(
    courier: Courier, bus: dict[str, Role]
) -> None:
    async with courier.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO pgcourier.inbox (consumer, message_id)"
            " VALUES ('jobs', 'a'), ('other', 'b')"
        )
        await conn.execute(
            "INSERT INTO pgcourier.dead_letter (queue_name, msg_id, enqueued_at, attempts)"
            " VALUES ('jobs', 1, now(), 1), ('other', 2, now(), 1)"
        )

    def seen(role: Role) -> tuple[list, list, int]:
        with psycopg.connect(role.url, autocommit=True) as conn:
            inbox = conn.execute("SELECT consumer FROM pgcourier.inbox").fetchall()
            dead = conn.execute("SELECT queue_name FROM pgcourier.dead_letter").fetchall()
            deleted = conn.execute("DELETE FROM pgcourier.inbox WHERE consumer = 'jobs'").rowcount
        return inbox, dead, deleted

    assert await asyncio.to_thread(seen, bus["outsider"]) == ([("other",)], [("other",)], 0)
    assert await asyncio.to_thread(seen, bus["consumer"]) == ([("jobs",)], [("jobs",)], 1)


async def test_every_message_is_stamped_with_the_role_that_inserted_it(
    courier: Courier, bus: dict[str, Role]
) -> None:
    async with Courier(bus["sender"].url) as as_sender:
        await as_sender.send("jobs", {"via": "pgcourier"}, type="job")
        await as_sender.send("jobs", {"via": "idempotent"}, idempotency_key="k")
        assert await as_sender.send("jobs", {"via": "idempotent"}, idempotency_key="k") is None
    await asyncio.to_thread(_as, bus["sender"], "SELECT pgmq.send('jobs', '{\"via\": \"pgmq\"}')")
    seen: dict[str, str | None] = {}

    async def handle(message: Message, ctx: Context) -> None:
        seen[message.payload["via"]] = message.sender

    async with Courier(bus["consumer"].url) as as_consumer:
        worker = Worker(as_consumer, poll_interval=0.05)
        worker.handle("jobs", handle, transactional=True)
        async with worker.running():
            await wait_until(lambda: len(seen) == 3)
    sender = bus["sender"].name
    assert seen == {"pgcourier": sender, "idempotent": sender, "pgmq": sender}


async def test_a_message_from_a_sender_its_route_does_not_accept_is_dead_lettered_unhandled(
    courier: Courier, bus: dict[str, Role]
) -> None:
    await Admin(courier).grant_send("jobs", bus["outsider"].name)
    async with Courier(bus["outsider"].url) as as_outsider:
        await as_outsider.send("jobs", {"amount": 0}, type="payment.captured")
    async with Courier(bus["sender"].url) as as_sender:
        await as_sender.send("jobs", {"amount": 5}, type="payment.captured")
    handled: list[dict] = []

    async def handle(message: Message, ctx: Context) -> None:
        handled.append(message.payload)

    async with Courier(bus["consumer"].url) as as_consumer:
        worker = Worker(as_consumer, poll_interval=0.05)
        worker.handle(
            "jobs",
            handle,
            type="payment.captured",
            senders={bus["sender"].name},
            transactional=True,
        )
        async with worker.running():
            await wait_until(lambda: handled)
            await wait_until(lambda: scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter"))
    assert handled == [{"amount": 5}]
    error = await scalar(courier, "SELECT errors -> -1 ->> 'error' FROM pgcourier.dead_letter")
    assert error.startswith("ForbiddenSenderError") and bus["outsider"].name in error
    assert await scalar(courier, "SELECT sender FROM pgcourier.dead_letter") == bus["outsider"].name


async def test_a_consumer_role_runs_a_worker_through_every_outcome(
    courier: Courier, bus: dict[str, Role]
) -> None:
    await courier.queue_create("jobs", max_attempts=2, backoff_base=0.01, backoff_max=0.01)
    async with Courier(bus["sender"].url) as as_sender:
        await as_sender.send_batch("jobs", [{"n": n} for n in range(6)])
    attempts: dict[int, int] = {}

    async def handle(message: Message, ctx: Context) -> None:
        n = message.payload["n"]
        attempts[n] = message.attempt
        if n % 2:
            raise RuntimeError("odd ones always fail")

    async with Courier(bus["consumer"].url) as as_consumer:
        worker = Worker(as_consumer, poll_interval=0.05, heartbeat_interval=0.05)
        worker.handle("jobs", handle, transactional=True)
        async with worker.running():
            await wait_until(lambda: scalar(courier, "SELECT count(*) = 0 FROM pgmq.q_jobs"))
            assert await scalar(courier, "SELECT db_role FROM pgcourier.worker") == (
                bus["consumer"].name
            )
    assert attempts == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2}
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter") == 3
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.inbox") == 3


async def test_publish_to_a_topic_is_all_or_nothing_when_one_queue_is_not_the_senders(
    courier: Courier, bus: dict[str, Role]
) -> None:
    await courier.subscribe("job.*", "jobs")
    await courier.subscribe("job.*", "other")
    async with Courier(bus["sender"].url) as as_sender:
        with pytest.raises(DatabaseError, match="permission denied"):
            await as_sender.publish("job.done", {"n": 1})
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 0


async def test_privileges_are_listed_from_the_grants(
    courier: Courier, bus: dict[str, Role]
) -> None:
    rows = {
        (p.queue, p.role): (p.may_send, p.may_consume) for p in await Admin(courier).privileges()
    }
    assert rows[("jobs", bus["sender"].name)] == (True, False)
    assert rows[("jobs", bus["consumer"].name)] == (False, True)
    assert ("jobs", bus["outsider"].name) not in rows
    await Admin(courier).revoke("jobs", bus["sender"].name)
    rows = {(p.queue, p.role) for p in await Admin(courier).privileges()}
    assert ("jobs", bus["sender"].name) not in rows
