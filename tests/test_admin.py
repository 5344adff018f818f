"""Admin: counts, peeking, dead letters and purging against a real database."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import pytest

from pgcourier import Courier, InvalidNameError, QueueNotFoundError
from pgcourier.admin import Admin, QueueStats


@pytest.fixture
def admin(courier: Courier) -> Admin:
    return Admin(courier)


def claim(database_url: str, queue: str, n: int = 1) -> list[int]:
    """Claims like a worker would, leaving the messages in flight for 30 s."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT msg_id FROM pgmq.read(%s, 30, %s)", [queue, n]).fetchall()
    return [r[0] for r in rows]


def add_dead_letter(
    database_url: str, queue: str, payload: Any, *, attempts: int = 5, error: str = "Boom: x"
) -> int:
    errors = [{"attempt": a + 1, "error": f"{error} ({a + 1})", "at": "t"} for a in range(attempts)]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO pgcourier.dead_letter"
            " (queue_name, msg_id, message, headers, enqueued_at, attempts, errors)"
            " VALUES (%s, 999, %s, %s, now(), %s, %s) RETURNING dead_letter_id",
            [
                queue,
                json.dumps(payload),
                json.dumps({"type": "order.placed", "message_id": "m-1"}),
                attempts,
                json.dumps(errors),
            ],
        ).fetchone()
    assert row is not None
    return int(row[0])


def stats_of(stats: list[QueueStats], queue: str) -> QueueStats:
    return next(s for s in stats if s.queue == queue)


async def test_queue_stats_count_ready_in_flight_delayed_and_dead_messages(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.queue_create("empty")
    for i in range(4):
        await courier.send("orders", {"n": i})
    await courier.send("orders", {"n": "later"}, delay=60)
    claim(database_url, "orders", 2)
    add_dead_letter(database_url, "orders", {"n": "dead"})

    stats = await admin.queue_stats()

    assert [s.queue for s in stats] == ["empty", "orders"]
    orders = stats_of(stats, "orders")
    assert (orders.ready, orders.in_flight, orders.delayed, orders.dead) == (2, 2, 1, 1)
    assert orders.oldest_ready_age_s is not None and orders.oldest_ready_age_s >= 0
    assert stats_of(stats, "empty") == QueueStats("empty", 0, 0, 0, 0, None)


async def test_peek_shows_every_message_without_claiming_any(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    first = await courier.send("orders", {"n": 1}, type="order.placed")
    await courier.send("orders", {"n": 2})
    await courier.send("orders", {"n": 3}, delay=60)

    peeked = await admin.peek("orders")

    assert [m.payload for m in peeked] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert peeked[0].msg_id == first and peeked[0].type == "order.placed"
    assert all(m.read_ct == 0 for m in peeked)
    # Still claimable: nothing was leased by peeking.
    assert claim(database_url, "orders", 10) == [peeked[0].msg_id, peeked[1].msg_id]
    assert [m.payload for m in await admin.peek("orders", limit=1)] == [{"n": 1}]


async def test_dead_letters_list_attempts_and_last_error(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.queue_create("other")
    dl_id = add_dead_letter(database_url, "orders", {"n": 1}, attempts=3, error="KeyError: sku")
    add_dead_letter(database_url, "other", {"n": 2})

    letters = await admin.dead_letters("orders")

    assert len(letters) == 1
    letter = letters[0]
    assert letter.dead_letter_id == dl_id
    assert letter.payload == {"n": 1}
    assert letter.attempts == 3 and len(letter.errors) == 3
    assert letter.last_error == "KeyError: sku (3)"
    assert letter.type == "order.placed"


async def test_dead_letter_retry_moves_dead_letters_back_to_the_queue(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.queue_create("other")
    first = add_dead_letter(database_url, "orders", {"n": 1})
    add_dead_letter(database_url, "orders", {"n": 2})
    foreign = add_dead_letter(database_url, "other", {"n": 3})

    # Only the named ids of this queue: another queue's id is ignored.
    assert await admin.dead_letter_retry("orders", dead_letter_ids=[first, foreign]) == 1
    assert [m.payload for m in await admin.peek("orders")] == [{"n": 1}]
    assert [d.payload for d in await admin.dead_letters("orders")] == [{"n": 2}]

    assert await admin.dead_letter_retry("orders") == 1
    messages = await admin.peek("orders")
    assert [m.payload for m in messages] == [{"n": 1}, {"n": 2}]
    assert all(m.read_ct == 0 and m.type == "order.placed" for m in messages)
    assert await admin.dead_letters("orders") == []
    assert len(await admin.dead_letters("other")) == 1
    orders = stats_of(await admin.queue_stats(), "orders")
    assert (orders.ready, orders.dead) == (2, 0)


async def test_dead_letter_retry_succeeds_when_a_newer_message_holds_its_idempotency_key(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.send("orders", {"n": "new"}, idempotency_key="k-1")
    dead = add_dead_letter(database_url, "orders", {"n": "old"})
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE pgcourier.dead_letter SET headers = headers || %s WHERE dead_letter_id = %s",
            [json.dumps({"idempotency_key": "k-1"}), dead],
        )
    assert await admin.dead_letter_retry("orders") == 1
    assert sorted(m.payload["n"] for m in await admin.peek("orders")) == ["new", "old"]
    assert await admin.dead_letters("orders") == []


async def test_queue_purge_deletes_every_message_and_keeps_dead_letters(
    courier: Courier, admin: Admin, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.send_batch("orders", [1, 2, 3])
    await courier.send("orders", 4, delay=60)
    claim(database_url, "orders")
    add_dead_letter(database_url, "orders", {"n": "dead"})

    assert await admin.queue_purge("orders") == 4
    assert await admin.peek("orders") == []
    assert len(await admin.dead_letters("orders")) == 1
    assert await admin.queue_purge("orders") == 0


def _calls(admin: Admin, queue: str) -> list[Callable[[], Coroutine[Any, Any, object]]]:
    return [
        lambda: admin.peek(queue),
        lambda: admin.dead_letters(queue),
        lambda: admin.dead_letter_retry(queue),
        lambda: admin.queue_purge(queue),
    ]


@pytest.mark.parametrize("method", range(4), ids=["peek", "dead", "retry", "purge"])
async def test_every_queue_method_raises_queue_not_found_for_an_unknown_queue(
    admin: Admin, database_url: str, method: int
) -> None:
    # A dead letter row alone does not make a queue.
    add_dead_letter(database_url, "ghost", {"n": 1})
    with pytest.raises(QueueNotFoundError, match="ghost") as info:
        await _calls(admin, "ghost")[method]()
    assert info.value.queue == "ghost"


@pytest.mark.parametrize("method", range(4), ids=["peek", "dead", "retry", "purge"])
async def test_every_queue_method_rejects_an_invalid_queue_name(admin: Admin, method: int) -> None:
    with pytest.raises(InvalidNameError):
        await _calls(admin, "Orders; DROP TABLE x")[method]()


async def test_peek_and_dead_letters_reject_a_limit_below_one(
    courier: Courier, admin: Admin
) -> None:
    await courier.queue_create("orders")
    with pytest.raises(ValueError, match="limit"):
        await admin.peek("orders", limit=0)
    with pytest.raises(ValueError, match="limit"):
        await admin.dead_letters("orders", limit=-1)


async def test_admin_methods_work_in_the_callers_transaction(
    courier: Courier, admin: Admin
) -> None:
    await courier.queue_create("orders")
    await courier.send_batch("orders", [1, 2])
    async with await psycopg.AsyncConnection.connect(courier.conninfo) as conn:
        assert await admin.queue_purge("orders", conn=conn) == 2
        await conn.rollback()
    assert len(await admin.peek("orders")) == 2
