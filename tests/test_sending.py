import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from pgcourier import (
    Courier,
    InvalidMessageError,
    InvalidNameError,
    PayloadTooLargeError,
    QueueNotFoundError,
)
from tests.helpers import scalar


async def count(courier: Courier, queue: str) -> int:
    return await scalar(courier, f"SELECT count(*) FROM pgmq.q_{queue}")


async def test_send_returns_ids_in_order_and_stores_the_envelope(courier: Courier) -> None:
    await courier.queue_create("jobs")
    first = await courier.send("jobs", {"n": 1}, type="job.created", headers={"tenant": "a"})
    batch = await courier.send_batch("jobs", [{"n": 2}, {"n": 3}])
    assert first is not None and batch == [first + 1, first + 2]
    headers = await scalar(courier, "SELECT headers FROM pgmq.q_jobs WHERE msg_id = %s", [first])
    assert headers["type"] == "job.created"
    assert headers["tenant"] == "a"
    assert headers["correlation_id"] == headers["message_id"]
    assert "sent_at" in headers


async def test_rolled_back_transaction_sends_nothing(courier: Courier) -> None:
    await courier.queue_create("jobs")
    async with await psycopg.AsyncConnection.connect(courier.conninfo) as conn:
        await courier.send("jobs", {"n": 1}, conn=conn)
        await courier.publish("anything", {"n": 1}, conn=conn)
        assert await count(courier, "jobs") == 0  # not visible before commit
        await conn.rollback()
    assert await count(courier, "jobs") == 0


async def test_committed_transaction_sends_with_the_business_write(courier: Courier) -> None:
    await courier.queue_create("jobs")
    async with await psycopg.AsyncConnection.connect(courier.conninfo) as conn:
        await conn.execute("CREATE TABLE orders (id int)")
        await conn.execute("INSERT INTO orders VALUES (1)")
        await courier.send("jobs", {"order": 1}, conn=conn)
        await conn.commit()
    assert await count(courier, "jobs") == 1


async def test_idempotency_key_makes_a_second_send_a_no_op_while_retained(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    first = await courier.send("jobs", {"n": 1}, idempotency_key="order-1")
    again = await courier.send("jobs", {"n": 1}, idempotency_key="order-1")
    other = await courier.send("jobs", {"n": 2}, idempotency_key="order-2")
    assert first is not None and again is None and other is not None
    assert await count(courier, "jobs") == 2
    # Once the first is gone (acknowledged), the key may be used again.
    await scalar(courier, "DELETE FROM pgmq.q_jobs WHERE msg_id = %s RETURNING 1", [first])
    assert await courier.send("jobs", {"n": 1}, idempotency_key="order-1") is not None


async def test_topic_fan_out_reaches_every_subscribed_queue_with_one_message_id(
    courier: Courier,
) -> None:
    for queue in ("billing", "shipping", "audit", "payments"):
        await courier.queue_create(queue)
    await courier.subscribe("order.*", "billing")
    await courier.subscribe("order.placed", "shipping")
    await courier.subscribe("#", "audit")
    await courier.subscribe("payment.#", "payments")
    targets = await courier.publish("order.placed", {"order": 7})
    assert targets == ["audit", "billing", "shipping"]
    ids = set()
    for queue in targets:
        ids.add(await scalar(courier, f"SELECT headers->>'message_id' FROM pgmq.q_{queue}"))
        assert await count(courier, queue) == 1
    assert len(ids) == 1
    assert await count(courier, "payments") == 0
    assert await courier.publish("nobody.listens.here", {}) == ["audit"]


@pytest.mark.parametrize(
    "name", ["", "Upper", "1starts_with_digit", "has-dash", "x" * 48, "semi;colon", None, 3]
)
async def test_invalid_queue_names_are_rejected(courier: Courier, name: object) -> None:
    with pytest.raises(InvalidNameError):
        await courier.queue_create(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        await courier.send(name, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("topic", ["", "a..b", "a.*", "a b", "x" * 256, 5])
async def test_invalid_topics_are_rejected(courier: Courier, topic: object) -> None:
    with pytest.raises(InvalidNameError):
        await courier.publish(topic, {})  # type: ignore[arg-type]


async def test_invalid_subscription_pattern_is_rejected(courier: Courier) -> None:
    await courier.queue_create("jobs")
    with pytest.raises(InvalidNameError):
        await courier.subscribe("a.*b", "jobs")


async def test_unknown_queue_raises_queue_not_found(courier: Courier) -> None:
    with pytest.raises(QueueNotFoundError, match="'ghost'"):
        await courier.send("ghost", {})
    with pytest.raises(QueueNotFoundError):
        await courier.subscribe("a.b", "ghost")
    with pytest.raises(QueueNotFoundError):
        await courier.queue_settings("ghost")


async def test_payload_that_is_not_json_is_rejected_and_nothing_is_written(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    with pytest.raises(InvalidMessageError, match="JSON"):
        await courier.send_batch("jobs", [{"ok": 1}, {"bad": object()}])
    with pytest.raises(InvalidMessageError, match="JSON"):
        await courier.send("jobs", {"nan": float("nan")})
    with pytest.raises(InvalidMessageError, match="infinity"):
        await courier.send("jobs", {"deep": [None, {"x": float("-inf")}]})
    with pytest.raises(InvalidMessageError, match="headers"):
        await courier.send("jobs", {}, headers={"h": float("nan")})
    with pytest.raises(InvalidMessageError, match="JSON"):
        await courier.send("jobs", {"at": datetime.now(UTC)})  # as json.dumps: refused
    assert await count(courier, "jobs") == 0


async def test_payloads_keep_what_json_allows_beyond_64_bit_ints_and_string_keys(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    payload = {"big": 2**70, "keys": {1: "one"}, "none": None, "text": 'quote " é'}
    msg_id = await courier.send("jobs", payload, correlation_id='say "hi"')
    stored = await scalar(courier, "SELECT message FROM pgmq.q_jobs WHERE msg_id = %s", [msg_id])
    headers = await scalar(courier, "SELECT headers FROM pgmq.q_jobs WHERE msg_id = %s", [msg_id])
    assert stored == {"big": 2**70, "keys": {"1": "one"}, "none": None, "text": 'quote " é'}
    assert headers["correlation_id"] == 'say "hi"'


async def test_message_ids_are_distinct_version_4_uuids(courier: Courier) -> None:
    await courier.queue_create("jobs")
    await courier.send_batch("jobs", [{"n": n} for n in range(500)])
    ids = await scalar(courier, "SELECT array_agg(headers ->> 'message_id') FROM pgmq.q_jobs")
    parsed = [uuid.UUID(i) for i in ids]
    assert len(set(parsed)) == 500
    assert {(u.version, u.variant) for u in parsed} == {(4, uuid.RFC_4122)}


async def test_payload_over_the_size_limit_is_rejected(database_url: str) -> None:
    async with Courier(database_url, max_payload_bytes=1000) as courier:
        await courier.queue_create("jobs")
        await courier.send("jobs", "x" * 900)
        with pytest.raises(PayloadTooLargeError, match="over the limit of 1000 bytes"):
            await courier.send("jobs", "x" * 1000)
        assert await count(courier, "jobs") == 1


@pytest.mark.parametrize("delay", [-1, -0.001, float("inf"), "5", True])
async def test_bad_delays_are_rejected(courier: Courier, delay: object) -> None:
    await courier.queue_create("jobs")
    with pytest.raises(InvalidMessageError, match="delay"):
        await courier.send("jobs", {}, delay=delay)  # type: ignore[arg-type]
    assert await count(courier, "jobs") == 0


async def test_reserved_headers_cannot_be_overridden(courier: Courier) -> None:
    await courier.queue_create("jobs")
    with pytest.raises(InvalidMessageError, match="message_id"):
        await courier.send("jobs", {}, headers={"message_id": "mine"})


async def test_queue_tables_are_tuned_for_churn(courier: Courier) -> None:
    await courier.queue_create("jobs")
    options = await scalar(
        courier, "SELECT reloptions FROM pg_class WHERE oid = 'pgmq.q_jobs'::regclass"
    )
    assert "fillfactor=70" in options
    assert "autovacuum_vacuum_scale_factor=0" in options


async def test_pgmq_clients_can_read_what_pgcourier_sends(courier: Courier) -> None:
    await courier.queue_create("jobs")
    await courier.send("jobs", {"hello": "pgmq"})
    async with courier.pool.connection() as conn:
        cur = await conn.execute("SELECT message FROM pgmq.read('jobs', 30, 10)")
        assert await cur.fetchall() == [({"hello": "pgmq"},)]


async def test_a_courier_from_the_environment_keeps_its_payload_limit(database_url: str) -> None:
    from pgcourier import PayloadTooLargeError, Settings

    settings = Settings.from_env(
        {"DATABASE_URL": database_url, "PGCOURIER_MAX_PAYLOAD_BYTES": "100"}
    )
    async with Courier.from_settings(settings) as courier:
        await courier.queue_create("jobs")
        assert await courier.send("jobs", {"text": "x" * 10}) is not None
        with pytest.raises(PayloadTooLargeError):
            await courier.send("jobs", {"text": "x" * 200})


def test_a_courier_without_a_database_in_its_settings_is_refused_with_the_variables_named() -> None:
    from pgcourier import ConfigurationError, Settings

    with pytest.raises(ConfigurationError, match="PGCOURIER_DATABASE_URL or DATABASE_URL"):
        Courier.from_settings(Settings.from_env({}))
