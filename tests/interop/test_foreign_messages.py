"""Messages from other pgmq clients: whatever they carry, pgcourier handles them, or
dead-letters the ones it cannot read with the reason, and goes on consuming.

Each test plays the other client with pgmq's SQL functions (tests/interop/foreign.py).
"""

from typing import Any

import pytest

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import queue_empty, scalar, wait_until
from tests.interop.foreign import NO_HEADERS, ForeignClient, dead_letters

# Long enough that a message retried instead of dead-lettered at once is still in its
# backoff when the test looks.
SLOW_BACKOFF = 30


class Seen:
    """A handler recording each message's payload "n" and headers."""

    def __init__(self) -> None:
        self.ns: list[int] = []
        self.headers: dict[int, dict[str, Any]] = {}

    async def __call__(self, message: Message, ctx: Context) -> None:
        self.ns.append(message.payload["n"])
        self.headers[message.payload["n"]] = dict(message.headers)


def quick_worker(courier: Courier, **options: Any) -> Worker:
    options.setdefault("poll_interval", 0.05)
    return Worker(courier, concurrency=10, batch_size=10, **options)


@pytest.mark.parametrize(
    "headers",
    [["a"], "str", 42, True, [{"type": "job"}]],
    ids=["array", "string", "number", "boolean", "array-of-objects"],
)
async def test_foreign_headers_not_an_object_dead_letter_the_message_and_its_batch_is_handled(
    courier: Courier, foreign: ForeignClient, headers: Any
) -> None:
    await courier.queue_create("jobs", max_attempts=5, backoff_base=SLOW_BACKOFF)
    # Sent before the worker starts, so that the three are claimed in one batch.
    await foreign.send("jobs", {"n": 1}, {"type": "job"})
    bad = await foreign.send("jobs", {"n": 2}, headers)
    await foreign.send("jobs", {"n": 3})
    seen = Seen()
    worker = quick_worker(courier)
    worker.handle("jobs", seen)
    async with worker.running():
        await wait_until(lambda: sorted(seen.ns) == [1, 3], within=5)
        await wait_until(lambda: dead_letters(foreign.conn, "jobs"), within=5)
        # The loop that met the message still claims.
        await foreign.send("jobs", {"n": 4}, {"type": "job"})
        await wait_until(lambda: 4 in seen.ns, within=5)
        await wait_until(lambda: queue_empty(courier, "jobs"), within=5)
    [dead] = await dead_letters(foreign.conn, "jobs")
    assert dead.msg_id == bad
    assert dead.message == {"n": 2}
    assert "header" in dead.reason.lower(), dead.errors
    assert sorted(seen.ns) == [1, 3, 4]


@pytest.mark.parametrize(
    "headers", [NO_HEADERS, None, {}], ids=["sql-null", "json-null", "empty-object"]
)
async def test_a_foreign_message_without_an_envelope_is_handled_by_the_catch_all_route(
    courier: Courier, foreign: ForeignClient, headers: Any
) -> None:
    await courier.queue_create("jobs")
    await foreign.send("jobs", {"n": 1}, headers)
    seen = Seen()
    worker = quick_worker(courier)
    worker.handle("jobs", seen)
    async with worker.running():
        await wait_until(lambda: seen.ns == [1], within=5)
        await wait_until(lambda: queue_empty(courier, "jobs"), within=5)
    assert await dead_letters(foreign.conn, "jobs") == []


async def test_a_foreign_message_of_a_type_nobody_handles_is_dead_lettered_at_once_with_the_type(
    courier: Courier, foreign: ForeignClient
) -> None:
    await courier.queue_create("jobs", max_attempts=5, backoff_base=SLOW_BACKOFF)
    mystery = await foreign.send("jobs", {"n": 1}, {"type": "mystery.happened"})
    await foreign.send("jobs", {"n": 2}, {"type": "job"})
    untyped = await foreign.send("jobs", {"n": 3})
    seen = Seen()
    worker = quick_worker(courier)
    worker.handle("jobs", seen, type="job")  # no catch-all route
    async with worker.running():
        await wait_until(lambda: seen.ns == [2], within=5)

        async def both_dead() -> bool:
            return len(await dead_letters(foreign.conn, "jobs")) == 2

        await wait_until(both_dead, within=5)
        # Still consuming.
        await foreign.send("jobs", {"n": 4}, {"type": "job"})
        await wait_until(lambda: seen.ns == [2, 4], within=5)
    dead = {d.msg_id: d for d in await dead_letters(foreign.conn, "jobs")}
    assert set(dead) == {mystery, untyped}
    assert "mystery.happened" in dead[mystery].reason, dead[mystery].errors
    assert dead[untyped].reason, dead[untyped].errors
    assert await queue_empty(courier, "jobs")


async def test_reads_by_another_client_are_not_counted_as_pgcourier_attempts(
    courier: Courier, foreign: ForeignClient
) -> None:
    await courier.queue_create("jobs", max_attempts=2, backoff_base=0.05, backoff_max=0.1)
    msg_id = await courier.send("jobs", {"n": 1}, type="job")
    # Another client reads it three times and lets it go each time (vt 0: visible again).
    for _ in range(3):
        assert [r.msg_id for r in await foreign.read("jobs", vt=0)] == [msg_id]
    attempts: list[int] = []

    async def fails_once(message: Message, ctx: Context) -> None:
        attempts.append(message.attempt)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    worker = quick_worker(courier)
    worker.handle("jobs", fails_once)
    async with worker.running():
        await wait_until(lambda: len(attempts) == 2, within=5)
        await wait_until(lambda: queue_empty(courier, "jobs"), within=5)
    assert await dead_letters(foreign.conn, "jobs") == []
    assert attempts == [1, 2]


async def test_a_foreign_message_after_the_queue_was_recreated_is_handled_not_taken_for_a_duplicate(
    courier: Courier, foreign: ForeignClient
) -> None:
    async with courier.pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (message_id text, n int)")

    async def record(message: Message, ctx: Context) -> None:
        assert ctx.conn is not None
        await ctx.conn.execute(
            "INSERT INTO effects (message_id, n) VALUES (%s, %s)",
            [message.id, message.payload["n"]],
        )

    async def consume_all() -> None:
        worker = quick_worker(courier)
        worker.handle("jobs", record, transactional=True)
        async with worker.running():
            await wait_until(lambda: queue_empty(courier, "jobs"), within=5)

    await courier.queue_create("jobs")
    first = await foreign.send("jobs", {"n": 1})
    await consume_all()
    assert await courier.queue_drop("jobs")
    await courier.queue_create("jobs")
    second = await foreign.send("jobs", {"n": 2})
    assert second == first  # the premise: pgmq's msg_ids start again in a new queue
    await consume_all()
    assert await scalar(courier, "SELECT array_agg(n ORDER BY n) FROM effects") == [1, 2]


async def test_another_clients_idempotency_key_header_may_repeat_and_every_message_is_handled(
    courier: Courier, foreign: ForeignClient
) -> None:
    await courier.queue_create("jobs")
    # Another client's header of that name means whatever that client means by it.
    a = await foreign.send("jobs", {"n": 1}, {"idempotency_key": "same"})
    b = await foreign.send("jobs", {"n": 2}, {"idempotency_key": "same"})
    assert a != b
    seen = Seen()
    worker = quick_worker(courier)
    worker.handle("jobs", seen)
    async with worker.running():
        await wait_until(lambda: sorted(seen.ns) == [1, 2], within=5)
    assert seen.headers[1]["idempotency_key"] == "same"
    assert seen.headers[2]["idempotency_key"] == "same"


async def test_pgcourier_idempotency_keys_and_a_foreign_idempotency_key_header_do_not_collide(
    courier: Courier, foreign: ForeignClient
) -> None:
    await courier.queue_create("jobs")
    # A foreign header first must not swallow pgcourier's send with the same key ...
    await foreign.send("jobs", {"n": 1}, {"idempotency_key": "k-1"})
    assert await courier.send("jobs", {"n": 2}, idempotency_key="k-1") is not None
    # ... nor may pgcourier's key refuse a foreign header sent after it.
    assert await courier.send("jobs", {"n": 3}, idempotency_key="k-2") is not None
    await foreign.send("jobs", {"n": 4}, {"idempotency_key": "k-2"})
    # pgcourier's own keys still do their job.
    assert await courier.send("jobs", {"n": 5}, idempotency_key="k-2") is None
    seen = Seen()
    worker = quick_worker(courier)
    worker.handle("jobs", seen)
    async with worker.running():
        await wait_until(lambda: sorted(seen.ns) == [1, 2, 3, 4], within=5)
        await wait_until(lambda: queue_empty(courier, "jobs"), within=5)
    assert sorted(seen.ns) == [1, 2, 3, 4]
