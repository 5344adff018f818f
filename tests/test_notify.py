import asyncio
import statistics
import time

import psycopg

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import scalar, wait_until


async def collect_notifies(conninfo: str, channel: str, action, settle: float = 0.5) -> list:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{channel}"')
        await action()
        return [n async for n in listener.notifies(timeout=settle)]


async def test_a_transaction_sending_a_thousand_messages_notifies_once(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")

    async def thousand_sends_in_one_transaction() -> None:
        async with await psycopg.AsyncConnection.connect(courier.conninfo) as conn:
            for n in range(1000):
                await courier.send("jobs", n, conn=conn)
            await conn.commit()

    notifies = await collect_notifies(
        courier.conninfo, "pgcourier_jobs", thousand_sends_in_one_transaction
    )
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 1000
    assert len(notifies) == 1
    # The payload names the queue, never carries the message.
    assert notifies[0].payload == "jobs"


async def test_messages_sent_by_other_pgmq_clients_wake_the_worker(courier: Courier) -> None:
    await courier.queue_create("jobs")

    async def raw_pgmq_send() -> None:
        async with courier.pool.connection() as conn:
            await conn.execute("SELECT pgmq.send('jobs', '{\"from\": \"pgmq\"}')")

    notifies = await collect_notifies(courier.conninfo, "pgcourier_jobs", raw_pgmq_send)
    assert [n.payload for n in notifies] == ["jobs"]


async def test_notify_wakes_the_worker_far_sooner_than_its_polling_interval(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    latencies: list[float] = []

    async def handle(message: Message, ctx: Context) -> None:
        latencies.append(time.time() - message.payload)

    worker = Worker(courier, poll_interval=30)
    worker.handle("jobs", handle)
    async with worker.running():
        await asyncio.sleep(0.1)
        for n in range(20):
            await courier.send("jobs", time.time())
            await wait_until(lambda n=n: len(latencies) == n + 1, within=5)
            await asyncio.sleep(0.02)
    # Polling every 30 s would make these take up to 30 s.
    assert max(latencies) < 1.0, latencies
    assert statistics.median(latencies) < 0.1, latencies


async def test_worker_recovers_when_its_listen_connection_is_terminated(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    handled: list[int] = []

    async def handle(message: Message, ctx: Context) -> None:
        handled.append(message.payload)

    worker = Worker(courier, poll_interval=30)
    worker.handle("jobs", handle)
    async with worker.running():
        listener = worker.listener
        assert listener is not None and listener.connections_made == 1
        pid = listener.backend_pid
        assert await scalar(courier, "SELECT pg_terminate_backend(%s)", [pid]) is True
        # Sent while the listener is down or reconnecting: found by the poll on reconnect.
        await courier.send("jobs", 1)
        await wait_until(lambda: listener.connections_made == 2 and listener.connected.is_set())
        assert listener.backend_pid != pid
        await wait_until(lambda: handled == [1], within=5)
        # And notifications work again on the new connection.
        started = time.monotonic()
        await courier.send("jobs", 2)
        await wait_until(lambda: handled == [1, 2], within=5)
        assert time.monotonic() - started < 1.0
