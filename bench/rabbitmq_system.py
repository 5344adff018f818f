"""RabbitMQ through aio-pika: durable queue, persistent messages, publisher confirms.

Producer: one connection and channel, publisher confirms on; a batch of 100 messages
is published concurrently, then its 100 confirms are awaited (the "publishing in
batches" strategy of aio-pika's publisher-confirms tutorial). The latency run
publishes one message at a time and awaits its confirm.

Consumers: one connection and channel per spawned process, basic.qos
prefetch_count=100, manual acks. The messages delivered so far (at most 100) are
handled one by one by a no-op handler, then acknowledged with one basic.ack
multiple=True on the last delivery tag (RabbitMQ's consumer-acknowledgements guide:
"manual acknowledgements can be batched to reduce network traffic").

`pending` is the message count of a passive queue.declare. AMQP reports only the
messages *ready* in a queue, not those delivered and unacknowledged, and the
management API (which has both) is not enabled on this broker. The harness first
waits for every message to reach a handler, so what this leaves out of a timing is
the last ack of each consumer on its way to the broker.

The queue is per run (named after the run's bench database), deleted when the run
exits, and declared with x-expires as a fallback should the run die first.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from harness import BATCH, BENCH_DB, Link, System, Target, Unavailable, log, paced_async, record
from pamqp.common import FieldTable

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CONNECT_TIMEOUT_S = 5.0
CONFIRM_TIMEOUT_S = 30.0
# Per-run durable queue; the broker drops it after an hour unused should the run die
# before deleting it (a queue redeclared or consumed from is in use).
QUEUE_ARGS: FieldTable = {"x-expires": 3_600_000}


def _shown(url: str) -> str:
    """The URL without its password, for notes and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}"))


async def _declare(channel: aio_pika.abc.AbstractChannel, name: str, **kwargs: Any) -> Any:
    return await channel.declare_queue(name, durable=True, arguments=QUEUE_ARGS, **kwargs)


# -- consumer (spawned processes) ------------------------------------------------------


def consumer(link: Link, idx: int) -> None:
    asyncio.run(_consume(link, idx))


async def _consume(link: Link, idx: int) -> None:
    assert link.target.amqp_url is not None
    latencies: list[float] = []
    connection = await aio_pika.connect(link.target.amqp_url, timeout=CONNECT_TIMEOUT_S)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=BATCH)
        queue = await _declare(channel, link.target.queue)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def deliver(message: AbstractIncomingMessage) -> None:
            # aiormq runs one task per delivery, in delivery order; nothing awaited
            # here, so the inbox keeps that order (multiple=True acks rely on it).
            inbox.put_nowait(message)

        def handler(message: AbstractIncomingMessage) -> None:
            record(link, idx, latencies, orjson.loads(message.body).get("t"))

        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        tag = await queue.consume(deliver, no_ack=False)
        link.running[idx] = 1
        stopping = asyncio.create_task(asyncio.to_thread(link.stop.wait))
        while not stopping.done():
            if inbox.empty():
                getting = asyncio.create_task(inbox.get())
                await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                last = getting.result()
            else:
                last = inbox.get_nowait()
            handler(last)
            for _ in range(BATCH - 1):
                if inbox.empty():
                    break
                last = inbox.get_nowait()
                handler(last)
            await last.ack(multiple=True)
        await queue.cancel(tag)
        # Whatever was delivered but not handled goes back to the queue on close.
    link.results.put((idx, latencies))


# -- producer (the benchmark's process) -------------------------------------------------


class Producer:
    def __init__(self, target: Target) -> None:
        assert target.amqp_url is not None
        self.url = target.amqp_url
        self.queue = target.queue
        self.runner = asyncio.Runner()
        self.runner.run(self._open())

    async def _open(self) -> None:
        self.connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        # Confirms are aio-pika's default; said explicitly, since the run depends on it.
        self.channel = await self.connection.channel(publisher_confirms=True)
        await _declare(self.channel, self.queue)
        self.exchange = self.channel.default_exchange

    def close(self) -> None:
        self.runner.run(self.connection.close())
        self.runner.close()

    def _publish(self, payload: dict[str, Any]) -> Any:
        message = aio_pika.Message(
            orjson.dumps(payload),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        # With confirms on, this resolves once the broker has confirmed the message.
        return self.exchange.publish(message, routing_key=self.queue, timeout=CONFIRM_TIMEOUT_S)

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        self.runner.run(self._send_batches(batches))

    async def _send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            # The whole batch goes out before any confirm is awaited.
            await asyncio.gather(*(self._publish(p) for p in batch))

    def send_paced(self, total: int, rate: float, payload: Any) -> None:
        self.runner.run(self._send_paced(total, rate, payload))

    async def _send_paced(self, total: int, rate: float, payload: Any) -> None:
        async for i in paced_async(total, rate):
            await self._publish(payload(i))


# -- queue admin ------------------------------------------------------------------------


async def _admin(target: Target, action: str) -> int:
    """ "purge" (declaring the queue first) or "delete"; returns the messages purged."""
    assert target.amqp_url is not None
    connection = await aio_pika.connect(target.amqp_url, timeout=CONNECT_TIMEOUT_S)
    async with connection:
        channel = await connection.channel()
        if action == "delete":
            await channel.queue_delete(target.queue)
            return 0
        queue = await _declare(channel, target.queue)  # (re)creates it, renews x-expires
        result = await queue.purge()
        return int(result.message_count or 0)


class _Counter:
    """`pending`, polled every few ms by wait_drained: one connection kept open."""

    def __init__(self) -> None:
        self.runner: asyncio.Runner | None = None
        self.connection: Any = None
        self.channel: Any = None

    def __call__(self, target: Target) -> int:
        if self.runner is None:
            self.runner = asyncio.Runner()
        return self.runner.run(self._count(target))

    async def _count(self, target: Target) -> int:
        if self.channel is None or self.channel.is_closed:
            assert target.amqp_url is not None
            self.connection = await aio_pika.connect(target.amqp_url, timeout=CONNECT_TIMEOUT_S)
            self.channel = await self.connection.channel()
        queue = await _declare(self.channel, target.queue, passive=True)
        return int(queue.declaration_result.message_count or 0)

    def close(self) -> None:
        if self.runner is not None:
            if self.connection is not None:
                self.runner.run(self.connection.close())
            self.runner.close()
            self.runner = None


def _reset(target: Target) -> None:
    left = asyncio.run(_admin(target, "purge"))
    if left:
        # Consumers are gone by now: anything purged was left over, or delivered and
        # never acknowledged (requeued when its channel closed).
        log(f"rabbitmq: purged {left} message(s) left over in {target.queue}")


def _cleanup(target: Target, counter: _Counter) -> None:
    counter.close()
    try:
        asyncio.run(_admin(target, "delete"))
        log(f"rabbitmq: deleted queue {target.queue}")
    except Exception as exc:  # the broker may be gone; x-expires will drop it
        log(f"rabbitmq: could not delete queue {target.queue} ({exc})")


async def _probe(url: str) -> str:
    connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
    async with connection:
        assert connection.transport is not None
        props = connection.transport.connection.server_properties
        product, version = (props.get(key, "?") for key in ("product", "version"))
    return f"{_text(product)} {_text(version)}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def system(url: str) -> System:
    target = Target(url, f"{BENCH_DB}_rabbitmq", amqp_url=AMQP_URL)
    try:
        server = asyncio.run(_probe(AMQP_URL))
    except Exception as exc:
        raise Unavailable(f"cannot connect to {_shown(AMQP_URL)}: {exc!r}") from exc
    asyncio.run(_admin(target, "purge"))
    counter = _Counter()
    atexit.register(_cleanup, target, counter)
    log(f"rabbitmq: {server} at {_shown(AMQP_URL)}, queue {target.queue}")
    return System(
        "rabbitmq",
        target,
        consumer,
        Producer,
        reset=_reset,
        pending=counter,
        describe=f"aio-pika {aio_pika.__version__}, {server} at {_shown(AMQP_URL)}; durable "
        f"classic queue, persistent messages, publisher confirms, {BATCH} published "
        f"concurrently then confirms awaited; per consumer process 1 connection, "
        f"prefetch_count={BATCH}, one basic.ack multiple=True per delivered batch; "
        f"pending = ready count of a passive declare (unacked not visible over AMQP)",
    )
