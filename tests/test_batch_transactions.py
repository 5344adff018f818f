"""transaction_per_batch: the transactional messages of one claim run in one
transaction, each handler in a savepoint, with one acknowledgement and one commit."""

from __future__ import annotations

from typing import Any

import pytest

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import queue_empty, scalar, wait_until


async def _prepare(courier: Courier, *, deferred_unique: bool = False) -> None:
    await courier.queue_create("jobs", backoff_base=0.05, backoff_max=0.05)
    await courier.queue_create("downstream")
    async with courier.pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (n int, attempt int, slot int, tx bigint)")
        if deferred_unique:
            await conn.execute(
                "ALTER TABLE effects ADD UNIQUE (slot) DEFERRABLE INITIALLY DEFERRED"
            )


async def _record(message: Message, ctx: Context) -> None:
    assert ctx.conn is not None
    n = message.payload["n"]
    await ctx.conn.execute(
        "INSERT INTO effects VALUES (%s, %s, %s, txid_current())",
        # slot: on the first attempt, every message of the deferred test takes slot 0
        [n, message.attempt, n if message.attempt > 1 else message.payload.get("slot", n)],
    )
    await ctx.send("downstream", {"n": n})
    if message.payload.get("fail_first") and message.attempt == 1:
        raise RuntimeError("first attempt fails after writing and sending")


async def _handled(courier: Courier, payloads: list[dict[str, Any]]) -> Any:
    """Sends the payloads in one batch and runs a worker until all are handled; the
    effects left, as [n, attempt] pairs."""
    await courier.send_batch("jobs", payloads)
    worker = Worker(courier, transaction_per_batch=True, batch_size=10, poll_interval=0.1)
    worker.handle("jobs", _record, transactional=True)
    async with worker.running():
        await wait_until(lambda: queue_empty(courier, "jobs"))
        await wait_until(lambda: not worker.consumers["jobs"].inflight)
    return await scalar(
        courier, "SELECT array_agg(array[n, attempt] ORDER BY n, attempt) FROM effects"
    )


async def test_the_transactional_messages_of_one_claim_commit_in_one_transaction(
    courier: Courier,
) -> None:
    await _prepare(courier)
    rows = await _handled(courier, [{"n": n} for n in range(10)])
    assert rows == [[n, 1] for n in range(10)]
    # One claim of ten, one transaction: its handlers' writes, sends and inbox records.
    assert await scalar(courier, "SELECT count(DISTINCT tx) FROM effects") == 1
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 10
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.inbox") == 10


async def test_a_failing_handler_rolls_back_only_its_own_writes_and_is_retried_alone(
    courier: Courier,
) -> None:
    await _prepare(courier)
    rows = await _handled(courier, [{"n": n, "fail_first": n == 3} for n in range(6)])
    # Each once; message 3's first attempt left nothing (its savepoint rolled back),
    # and only message 3 was tried again.
    assert rows == [[0, 1], [1, 1], [2, 1], [3, 2], [4, 1], [5, 1]]
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 6
    assert await scalar(courier, "SELECT count(DISTINCT tx) FROM effects WHERE n <> 3") == 1


async def test_a_batch_whose_commit_fails_retries_every_message_and_keeps_none_of_it(
    courier: Courier,
) -> None:
    """Each handler alone succeeds, but together they break a deferred constraint at
    commit: nothing of the batch holds, and every message is tried again."""
    await _prepare(courier, deferred_unique=True)
    rows = await _handled(courier, [{"n": n, "slot": 0} for n in range(4)])
    assert rows == [[0, 2], [1, 2], [2, 2], [3, 2]]
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 4
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.inbox") == 4


def test_the_shop_switch_reads_yes_or_no_and_refuses_anything_else() -> None:
    from pgcourier import ConfigurationError
    from pgcourier.settings import env_flag

    name = "SHOP_TRANSACTION_PER_BATCH"
    assert env_flag({}, name, True) is True
    assert env_flag({name: "0"}, name, True) is False
    assert env_flag({name: " On "}, name, False) is True
    with pytest.raises(ConfigurationError, match=f"{name} must be one of"):
        env_flag({name: "maybe"}, name, True)
