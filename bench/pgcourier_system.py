"""pgcourier: one Worker per consumer process, batches of 100, LISTEN/NOTIFY.

Configured as the README recommends for throughput: concurrency twice the batch
size, so that the next batch is being claimed while the last one is handled.

Metrics and tracing are off here (pgcourier.metrics.enable(False), likewise tracing):
pgcourier_observed_system.py and pgcourier_recorded_system.py run the same with them
on, to show what they cost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from harness import (
    BATCH,
    VT_S,
    Link,
    System,
    Target,
    paced_async,
    queue_reset,
    queue_rows,
    record,
)

from pgcourier import Context, Courier, Message, Worker, metrics, tracing


def observe(mode: str) -> None:
    """off: metrics and tracing off. observed: metrics on, trace context carried in
    every message through the OpenTelemetry API, no SDK (nothing recorded). recorded:
    the same with an SDK provider recording a span per send and per message."""
    metrics.enable(mode != "off")
    tracing.enable(mode != "off")
    tracing.use_provider(_sdk_provider() if mode == "recorded" else None)


_provider: Any = None


def _sdk_provider() -> Any:
    """An SDK TracerProvider whose batch processor hands spans to an exporter that
    drops them: what recording costs in the process, without any exporting I/O."""
    global _provider
    if _provider is None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Dropped(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        _provider = TracerProvider()
        _provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return _provider


def consumer(link: Link, idx: int, *, mode: str = "off") -> None:
    observe(mode)
    asyncio.run(_consume(link, idx))


async def _consume(link: Link, idx: int) -> None:
    latencies: list[float] = []
    async with Courier(link.target.url) as courier:
        worker = Worker(courier, concurrency=2 * BATCH, batch_size=BATCH, poll_interval=1.0)

        async def handler(message: Message, ctx: Context) -> None:
            record(link, idx, latencies, message.payload.get("t"))

        worker.handle(link.target.queue, handler)
        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        async with worker.running():
            link.running[idx] = 1
            # Until told to stop, or a loop of the worker ended (it failed: leaving
            # the block raises its error).
            while worker.status()[2] and not await asyncio.to_thread(link.stop.wait, 0.2):
                pass
    link.results.put((idx, latencies))


class Producer:
    mode = "off"

    def __init__(self, target: Target) -> None:
        self.queue = target.queue
        self.runner = asyncio.Runner()
        self.courier = Courier(target.url)
        self.runner.run(self.courier.open())

    def close(self) -> None:
        self.runner.run(self.courier.close())
        self.runner.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        observe(self.mode)
        self.runner.run(self._send_batches(batches))

    async def _send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            await self.courier.send_batch(self.queue, batch)

    def send_paced(self, total: int, rate: float, payload: Any) -> None:
        observe(self.mode)
        self.runner.run(self._send_paced(total, rate, payload))

    async def _send_paced(self, total: int, rate: float, payload: Any) -> None:
        async for i in paced_async(total, rate):
            await self.courier.send(self.queue, payload(i))


def system(url: str) -> System:
    target = Target(url, "bench_pgcourier")

    async def create() -> None:
        async with Courier(url) as courier:
            await courier.queue_create(target.queue, visibility_timeout=VT_S)

    asyncio.run(create())
    return System(
        "pgcourier",
        target,
        consumer,
        Producer,
        reset=queue_reset,
        pending=queue_rows,
        describe=f"1 Worker + Courier per consumer process, batch_size={BATCH}, "
        f"concurrency={2 * BATCH}, LISTEN/NOTIFY, poll_interval=1s",
    )
