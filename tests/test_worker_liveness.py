"""A worker keeps consuming, or says loudly that it cannot.

Long-lived behaviour is tested by shrinking its time scale: tiny poll intervals turn
an hour of idleness into seconds.
"""

import asyncio
import json
import logging
import time

import pytest

from pgcourier import Context, Courier, Message, Worker, WorkerCrashedError, store
from tests.helpers import scalar, wait_until


async def _handled_into(seen: list) -> object:
    async def handle(message: Message, ctx: Context) -> None:
        seen.append(message.payload)

    return handle


@pytest.mark.timeout(300)  # ~5 s on a quiet machine; minutes on a loaded one
async def test_idle_worker_survives_thousands_of_empty_claims_then_handles_a_message(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    seen: list = []
    # ~17 idle minutes at the default poll interval once killed the loop (an unbounded
    # backoff exponent overflowed after 1,024 empty claims): twice that many here.
    worker = Worker(courier, poll_interval=0.0001, empty_claim_backoff=1e-6, listen=False)
    worker.handle("jobs", await _handled_into(seen))
    async with worker.running():
        consumer = worker.consumers["jobs"]
        await wait_until(lambda: consumer.claims >= 2_048, within=120, interval=0.05)
        assert consumer._empty_claims <= 4  # the backoff's exponent stays bounded
        await courier.send("jobs", {"n": 1})
        await wait_until(lambda: seen, within=5)
    assert seen == [{"n": 1}]


async def test_key_blocked_behind_its_in_flight_head_does_not_make_the_loop_spin(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    await courier.send("jobs", {"n": 1}, ordering_key="k")
    await courier.send("jobs", {"n": 2}, ordering_key="k")
    # Another pgmq client holds the key's head for a minute.
    async with courier.pool.connection() as conn:
        cur = await conn.execute("SELECT msg_id FROM pgmq.read('jobs', 60, 1)")
        head = (await cur.fetchone())[0]
    seen: list = []
    poll = 0.05
    worker = Worker(courier, poll_interval=poll)
    worker.handle("jobs", await _handled_into(seen))
    async with worker.running():
        consumer = worker.consumers["jobs"]
        await asyncio.sleep(0.2)
        before, started = consumer.claims, time.monotonic()
        await asyncio.sleep(1.0)
        rate = (consumer.claims - before) / (time.monotonic() - started)
        assert rate <= 2 / poll, f"{rate:.0f} claims/s with a {poll}s poll interval"
        assert seen == []
        async with courier.pool.connection() as conn:
            await conn.execute("SELECT pgmq.delete('jobs', %s::bigint)", [head])
        await wait_until(lambda: seen, within=2)
    assert seen == [{"n": 2}]


@pytest.mark.parametrize("headers", ['["a"]', '"str"', "42", "null"])
async def test_foreign_message_with_non_object_headers_harms_only_itself(
    courier: Courier, headers: str
) -> None:
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute("SELECT pgmq.send('jobs', '{\"n\": 1}')")
        await conn.execute("SELECT pgmq.send('jobs', '{\"n\": 2}'::jsonb, %s::jsonb)", [headers])
        await conn.execute("SELECT pgmq.send('jobs', '{\"n\": 3}')")
    seen: list = []
    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", await _handled_into(seen))
    async with worker.running():
        if headers == "null":  # JSON null headers read as none at all
            await wait_until(lambda: len(seen) == 3)
        else:
            await wait_until(lambda: len(seen) == 2)
            await wait_until(lambda: scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter"))
        await courier.send("jobs", {"n": 4})
        await wait_until(lambda: {"n": 4} in seen)
    if headers != "null":
        error = await scalar(courier, "SELECT errors -> 0 ->> 'error' FROM pgcourier.dead_letter")
        assert "headers must be a JSON object" in error
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 0


async def test_payload_the_decoder_refuses_is_read_by_the_fallback(courier: Courier) -> None:
    # 1e400 is valid jsonb; orjson refuses it as out of a double's range.
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute("SELECT pgmq.send('jobs', '{\"big\": 1e400, \"n\": 1}')")
    seen: list = []
    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", await _handled_into(seen))
    async with worker.running():
        await wait_until(lambda: seen)
    assert seen[0]["n"] == 1


async def test_stale_holder_cannot_ack_retry_or_dead_letter_the_new_holders_message(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    await courier.send("jobs", {"n": 1})
    async with courier.statement_connection() as conn:
        # The first claim's lease runs out ...
        first = await store.claim(conn, "jobs", limit=1, vt_s=0.01)
        [row] = first.rows
        await asyncio.sleep(0.05)
        stale = store.Lease(row.msg_id, row.read_ct)
        # ... and another pgmq client has claimed the message since.
        await conn.execute("SELECT * FROM pgmq.read('jobs', 60, 1)")
        failure = store.Failure(stale, json.dumps([{"error": "x"}]), 1, 0.0)
        assert await store.acknowledge(conn, "jobs", [stale], archive=False) == 0
        assert await store.retry(conn, "jobs", [failure]) == 0
        assert await store.dead_letter(conn, "jobs", [failure]) == 0
        assert await store.extend(conn, "jobs", [stale], vt_s=60) == set()
        cur = await conn.execute("SELECT read_ct, vt > now() + interval '50 s' FROM pgmq.q_jobs")
        assert await cur.fetchall() == [(2, True)]
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter") == 0


async def test_a_worker_whose_lease_was_taken_over_leaves_the_message_to_its_new_holder(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs", visibility_timeout=0.3)
    await courier.send("jobs", {"n": 1})
    release = asyncio.Event()
    attempts: list[int] = []

    async def slow(message: Message, ctx: Context) -> None:
        attempts.append(message.read_ct)
        await release.wait()
        raise RuntimeError("fails after its lease was taken over")

    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", slow)
    async with worker.running():
        await wait_until(lambda: attempts)
        # The renewer keeps the lease; a stall (the database, the event loop) makes it
        # run out: simulated by another client taking the message over.
        async with courier.pool.connection() as conn:
            await conn.execute("UPDATE pgmq.q_jobs SET vt = now() - interval '1 s'")
            await conn.execute("SELECT * FROM pgmq.read('jobs', 60, 1)")
        release.set()
        await wait_until(lambda: worker.consumers["jobs"].completer.lost == 1)
    # The failure was not recorded on the new holder's message: no retry scheduled,
    # no error appended, no dead letter.
    async with courier.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT read_ct, headers ? 'x-pgcourier-errors', vt > now() + interval '30 s'"
            " FROM pgmq.q_jobs"
        )
        assert await cur.fetchall() == [(attempts[0] + 1, False, True)]


async def test_message_read_elsewhere_is_not_dead_lettered_on_pgcouriers_first_failure(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs", max_attempts=2, backoff_base=0.01, backoff_max=0.01)
    await courier.send("jobs", {"n": 1})
    async with courier.pool.connection() as conn:
        for _ in range(3):
            await conn.execute("SELECT * FROM pgmq.read('jobs', 0, 1)")
    attempts: list[int] = []

    async def flaky(message: Message, ctx: Context) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first attempt fails")

    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", flaky)
    async with worker.running():
        await wait_until(lambda: len(attempts) == 2)
        await wait_until(lambda: scalar(courier, "SELECT count(*) = 0 FROM pgmq.q_jobs"))
    assert attempts == [1, 2]
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter") == 0


async def test_delayed_message_is_on_time_even_when_the_last_claim_found_work(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    handled: dict[str, float] = {}

    async def handle(message: Message, ctx: Context) -> None:
        handled[message.payload] = time.monotonic()

    worker = Worker(courier, poll_interval=10)
    worker.handle("jobs", handle)
    async with worker.running():
        async with courier.pool.connection() as conn:  # one transaction, one NOTIFY
            await courier.send("jobs", "now", conn=conn)
            await courier.send("jobs", "later", delay=0.5, conn=conn)
        sent = time.monotonic()
        await wait_until(lambda: "later" in handled, within=5)
    assert 0.45 <= handled["later"] - sent < 0.5 + 0.25, handled["later"] - sent


async def test_claim_errors_are_survived_and_consuming_resumes(courier: Courier) -> None:
    await courier.queue_create("jobs")
    seen: list = []
    worker = Worker(courier, poll_interval=0.02)
    worker.handle("jobs", await _handled_into(seen))
    async with worker.running():
        async with courier.pool.connection() as conn:
            await conn.execute("ALTER TABLE pgmq.q_jobs RENAME TO q_jobs_away")
        claims = worker.consumers["jobs"].claims
        await asyncio.sleep(0.3)  # claims fail meanwhile
        assert worker.consumers["jobs"].claims == claims
        async with courier.pool.connection() as conn:
            await conn.execute("ALTER TABLE pgmq.q_jobs_away RENAME TO q_jobs")
        await courier.send("jobs", {"n": 1})
        await wait_until(lambda: seen, within=5)


async def test_run_fails_at_once_when_one_of_its_loops_ends(courier: Courier) -> None:
    await courier.queue_create("jobs")
    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", await _handled_into([]))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 10)
    heartbeat = next(t for t in worker._loops if "heartbeat" in t.get_name())
    heartbeat.cancel()
    with pytest.raises(WorkerCrashedError, match="heartbeat"):
        await asyncio.wait_for(task, 10)


async def test_worker_reports_its_liveness_in_the_database(courier: Courier) -> None:
    await courier.queue_create("jobs")
    worker = Worker(courier, poll_interval=0.05, heartbeat_interval=0.05, name="jobs-worker-1")
    worker.handle("jobs", await _handled_into([]))
    async with worker.running():
        await wait_until(
            lambda: scalar(
                courier,
                "SELECT loops_alive AND listening AND last_claim_at IS NOT NULL"
                " FROM pgcourier.worker WHERE name = 'jobs-worker-1'",
            )
        )
        async with courier.statement_connection() as conn:
            health = await store.consumer_health(conn, "jobs", alive_within_s=5)
        assert health.live_workers == 1
    # A clean stop removes the row: nobody consumes any more.
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.worker") == 0


async def test_a_loop_that_ignores_cancellation_does_not_keep_the_worker_from_stopping(
    courier: Courier, caplog: pytest.LogCaptureFixture
) -> None:
    await courier.queue_create("jobs")
    let_go = asyncio.Event()

    class Stubborn(Worker):
        async def _maintain(self) -> None:
            while True:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    if let_go.is_set():
                        raise

    async def handle(message: Message, ctx: Context) -> None:
        return None

    worker = Stubborn(courier, maintenance_interval=0.01)
    worker.loop_stop_patience_s = 0.3
    worker.handle("jobs", handle)
    with caplog.at_level(logging.ERROR, logger="pgcourier.worker"):
        async with worker.running(stop_timeout=10):
            pass
    assert "'pgcourier maintenance' still running 0.3s after being cancelled" in caplog.text
    let_go.set()
    stuck = [t for t in asyncio.all_tasks() if t.get_name() == "pgcourier maintenance"]
    assert stuck
    for task in stuck:
        task.cancel()
    await asyncio.gather(*stuck, return_exceptions=True)
