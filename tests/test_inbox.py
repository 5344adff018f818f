import asyncio
import os
import signal
import sys
from pathlib import Path

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import queue_empty, scalar, wait_until

ROOT = Path(__file__).resolve().parent.parent


async def record_effect(message: Message, ctx: Context) -> None:
    assert ctx.conn is not None
    await ctx.conn.execute(
        "INSERT INTO effects (message_id, attempt) VALUES (%s, %s)", [message.id, message.attempt]
    )
    await ctx.send("downstream", {"caused_by": message.id})


async def prepare(courier: Courier, *, visibility_timeout: float = 30) -> None:
    await courier.queue_create("jobs", visibility_timeout=visibility_timeout)
    await courier.queue_create("downstream")
    async with courier.pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (message_id text, attempt int)")


async def test_worker_killed_mid_handler_has_its_message_redelivered_and_applied_once(
    courier: Courier, database_url: str, tmp_path: Path
) -> None:
    await prepare(courier, visibility_timeout=1.5)
    await courier.send("jobs", {"order": 1})
    marker = tmp_path / "in-handler"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.worker_process", database_url, str(marker), cwd=ROOT
    )
    try:
        await wait_until(marker.exists, within=20)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    assert marker.read_text() == "1"
    # The killed transaction left nothing behind.
    assert await scalar(courier, "SELECT count(*) FROM effects") == 0

    worker = Worker(courier, poll_interval=0.2)
    worker.handle("jobs", record_effect, transactional=True)
    async with worker.running():
        # Acknowledged in the handler's own transaction: once the message is gone
        # and no handler holds it, no second application can come.
        await wait_until(lambda: queue_empty(courier, "jobs"))
        await wait_until(lambda: not worker.consumers["jobs"].inflight)
    assert await scalar(courier, "SELECT count(*) FROM effects") == 1
    # A lease that ran out records no failure: the crash did not use up an attempt.
    assert await scalar(courier, "SELECT attempt FROM effects") == 1
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 1
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 0


async def test_a_message_delivered_twice_has_its_effects_once(courier: Courier) -> None:
    await prepare(courier)
    # The same envelope twice, as a producer that retried its send would leave it.
    headers = '{"message_id": "m-1", "type": "job"}'
    async with courier.pool.connection() as conn:
        await conn.execute("SELECT pgmq.send('jobs', '{}'::jsonb, %s::jsonb)", [headers])
        await conn.execute("SELECT pgmq.send('jobs', '{}'::jsonb, %s::jsonb)", [headers])
    worker = Worker(courier, concurrency=1)
    worker.handle("jobs", record_effect, transactional=True)
    async with worker.running():
        await wait_until(lambda: queue_empty(courier, "jobs"))
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 0
    assert await scalar(courier, "SELECT count(*) FROM effects") == 1
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 1
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.inbox") == 1


async def test_failed_transactional_handler_leaves_no_effects_and_no_inbox_record(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs", backoff_base=0.05)
    await courier.queue_create("downstream")
    async with courier.pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (message_id text, attempt int)")
    attempts: list[int] = []

    async def fails_first(message: Message, ctx: Context) -> None:
        attempts.append(message.attempt)
        await record_effect(message, ctx)
        if message.attempt == 1:
            raise RuntimeError("after writing")

    worker = Worker(courier, poll_interval=5)
    worker.handle("jobs", fails_first, transactional=True)
    await courier.send("jobs", {})
    async with worker.running():
        await wait_until(lambda: attempts == [1, 2])
        await wait_until(lambda: queue_empty(courier, "jobs"))
        await wait_until(lambda: not worker.consumers["jobs"].inflight)
    assert await scalar(courier, "SELECT array_agg(attempt) FROM effects") == [2]
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_downstream") == 1
