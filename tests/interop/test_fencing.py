"""Leases are fenced: a worker whose lease ran out, and whose message someone else has
claimed since, can no longer delete, reschedule or dead-letter that message.

The lease is made to run out with pgmq.set_vt (what the clock would do, without the
wait), in the same transaction as the new holder's read, so nobody claims in between.
"""

import asyncio
from typing import Any

import pytest

from pgcourier import Context, Courier, Message, RejectMessage, Worker
from tests.helpers import queue_empty, wait_until
from tests.interop.foreign import ForeignClient, dead_letters

OUTCOMES = {
    # outcome: (queue options, handler options)
    "acknowledged": ({}, {}),
    "acknowledged-in-transaction": ({}, {"transactional": True}),
    "retried": ({"max_attempts": 5}, {}),
    "rejected": ({"max_attempts": 5}, {}),
    "out-of-attempts": ({"max_attempts": 1}, {}),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_a_stale_holder_cannot_touch_a_message_another_client_has_taken_over(
    courier: Courier, foreign: ForeignClient, outcome: str
) -> None:
    queue_options, handler_options = OUTCOMES[outcome]
    await courier.queue_create("jobs", visibility_timeout=30, backoff_base=0.05, **queue_options)
    started = asyncio.Event()
    release = asyncio.Event()

    async def stale_holder(message: Message, ctx: Context) -> None:
        started.set()
        await release.wait()
        if outcome in ("retried", "out-of-attempts"):
            raise RuntimeError("the stale holder fails")
        if outcome == "rejected":
            raise RejectMessage("the stale holder rejects")

    msg_id = await courier.send("jobs", {"n": 1}, type="job")
    worker = Worker(courier, concurrency=1, poll_interval=0.05)
    worker.handle("jobs", stale_holder, **handler_options)
    async with worker.running():
        await wait_until(started.is_set, within=5)
        taken = await foreign.take_over("jobs", msg_id, vt=60)
        release.set()
    # stop() waited for the handler and wrote its outcome.
    now = await foreign.row("jobs", msg_id)
    assert now is not None, "the stale holder removed the new holder's message"
    assert now.read_ct == taken.read_ct
    assert now.vt == taken.vt, "the stale holder rescheduled the new holder's message"
    assert now.headers == taken.headers
    assert await dead_letters(foreign.conn, "jobs") == []


async def test_a_stale_worker_cannot_acknowledge_the_message_another_worker_now_holds(
    database_url: str, foreign: ForeignClient
) -> None:
    holders: list[str] = []
    started = {name: asyncio.Event() for name in ("old", "new")}
    release = {name: asyncio.Event() for name in ("old", "new")}

    def holder(name: str) -> Any:
        async def handle(message: Message, ctx: Context) -> None:
            holders.append(name)
            started[name].set()
            await release[name].wait()

        return handle

    async with (
        Courier(database_url, pool_max_size=4) as old_courier,
        Courier(database_url, pool_max_size=4) as new_courier,
    ):
        await old_courier.queue_create("jobs", visibility_timeout=30)
        # One slot each: a worker busy with the message cannot claim it a second time.
        old = Worker(old_courier, concurrency=1, poll_interval=0.05, shutdown_timeout=5)
        old.handle("jobs", holder("old"))
        new = Worker(new_courier, concurrency=1, poll_interval=0.05, shutdown_timeout=5)
        new.handle("jobs", holder("new"))
        msg_id = await old_courier.send("jobs", {"n": 1})
        # The old worker starts first and stops first: not nested, so by hand.
        old_running = old.running()
        await old_running.__aenter__()
        try:
            await wait_until(started["old"].is_set, within=5)
            async with new.running():
                # The old worker's lease runs out; the new worker claims the message.
                assert await foreign.set_vt("jobs", msg_id, 0)
                await wait_until(started["new"].is_set, within=5)
                held = await foreign.row("jobs", msg_id)
                assert held is not None
                # The old worker finishes and stops: its acknowledgement must change nothing.
                release["old"].set()
                await old_running.__aexit__(None, None, None)
                now = await foreign.row("jobs", msg_id)
                assert now is not None, "the stale worker deleted the message the new worker holds"
                assert (now.read_ct, now.vt) == (held.read_ct, held.vt)
                # The new holder's acknowledgement is the one that counts.
                release["new"].set()
                await wait_until(lambda: queue_empty(old_courier, "jobs"), within=5)
        finally:
            # No handler is left waiting when a failed assertion stops the workers.
            for event in release.values():
                event.set()
            if not old.stopping:
                await old_running.__aexit__(None, None, None)
    assert holders == ["old", "new"]
