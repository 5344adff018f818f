import uuid

import psycopg
from prometheus_client import REGISTRY

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


async def test_notify_wakes_the_worker_for_every_send_and_polling_never_has_to(
    courier: Courier,
) -> None:
    """Each send is handled long before a 30 s poll could have found it, and the
    worker's own count of wake-ups says NOTIFY woke it, never its poll: a check of
    causes, not of a latency a loaded machine could stretch."""
    queue = f"notified_{uuid.uuid4().hex[:10]}"  # the metrics are the process's
    await courier.queue_create(queue)
    handled: list[int] = []

    async def handle(message: Message, ctx: Context) -> None:
        handled.append(message.payload)

    worker = Worker(courier, poll_interval=30)
    worker.handle(queue, handle)
    async with worker.running():
        for n in range(20):
            await courier.send(queue, n)
            await wait_until(lambda n=n: len(handled) == n + 1, within=10)
    assert handled == list(range(20))
    wakeups = {by: _wakeups(queue, by) for by in ("notify", "poll")}
    assert wakeups["notify"] >= 20 and wakeups["poll"] == 0, wakeups


async def test_worker_recovers_when_its_listen_connection_is_terminated(
    courier: Courier,
) -> None:
    queue = f"relisten_{uuid.uuid4().hex[:10]}"  # the metrics are the process's
    await courier.queue_create(queue)
    handled: list[int] = []

    async def handle(message: Message, ctx: Context) -> None:
        handled.append(message.payload)

    worker = Worker(courier, poll_interval=30)
    worker.handle(queue, handle)
    async with worker.running():
        listener = worker.listener
        assert listener is not None and listener.connections_made == 1
        pid = listener.backend_pid
        assert await scalar(courier, "SELECT pg_terminate_backend(%s)", [pid]) is True
        # Sent while the listener is down or reconnecting: found by the poll on reconnect.
        await courier.send(queue, 1)
        await wait_until(lambda: listener.connections_made == 2 and listener.connected.is_set())
        assert listener.backend_pid != pid
        await wait_until(lambda: handled == [1], within=5)
        # And notifications work again on the new connection: the worker says a
        # NOTIFY woke it for the next send.
        before = _wakeups(queue, "notify")
        await courier.send(queue, 2)
        await wait_until(lambda: handled == [1, 2], within=10)
        assert _wakeups(queue, "notify") > before


def _wakeups(queue: str, by: str) -> float:
    return REGISTRY.get_sample_value("pgcourier_wakeups_total", {"queue": queue, "by": by}) or 0.0
