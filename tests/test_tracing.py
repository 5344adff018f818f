"""Trace context travels in the message headers: a handler's span is the child of the
sender's, and a message without context starts a trace of its own."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pgcourier import Context, Courier, Message, Worker, tracing
from tests.helpers import wait_until


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


async def test_the_handler_span_is_a_child_of_the_sending_span_and_its_sends_continue_it(
    courier: Courier, spans: InMemorySpanExporter
) -> None:
    await courier.queue_create("first")
    await courier.queue_create("second")
    headers: dict[str, dict] = {}

    async def relay(message: Message, ctx: Context) -> None:
        headers["first"] = message.headers
        await ctx.send("second", message.payload)

    async def last(message: Message, ctx: Context) -> None:
        headers["second"] = message.headers

    worker = Worker(courier, poll_interval=0.05)
    worker.handle("first", relay)
    worker.handle("second", last)
    with tracing.tracer("test").start_as_current_span("request") as request:
        await courier.send("first", {"n": 1})
    async with worker.running():
        await wait_until(lambda: "second" in headers)
        await wait_until(lambda: len(spans.get_finished_spans()) == 5)

    by_name = {s.name: s for s in spans.get_finished_spans()}
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in by_name.values()} == {trace_id}
    send_first, process_first = by_name["send first"], by_name["process first"]
    send_second, process_second = by_name["send second"], by_name["process second"]
    assert send_first.kind == SpanKind.PRODUCER and process_first.kind == SpanKind.CONSUMER
    assert send_first.parent.span_id == request.get_span_context().span_id
    assert process_first.parent.span_id == send_first.context.span_id
    assert send_second.parent.span_id == process_first.context.span_id
    assert process_second.parent.span_id == send_second.context.span_id
    assert headers["first"]["traceparent"].split("-")[2] == f"{send_first.context.span_id:016x}"
    assert process_first.attributes["messaging.destination.name"] == "first"
    assert process_first.attributes["pgcourier.attempt"] == 1


async def test_a_message_without_trace_context_starts_a_new_trace(
    courier: Courier, database_url: str, spans: InMemorySpanExporter
) -> None:
    await courier.queue_create("plain")
    # As another pgmq client sends: no pgcourier headers at all.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pgmq.send('plain', '{\"n\": 1}')")
    handled: list[int] = []

    async def handle(message: Message, ctx: Context) -> None:
        handled.append(message.payload["n"])

    worker = Worker(courier, poll_interval=0.05)
    worker.handle("plain", handle)
    with tracing.tracer("test").start_as_current_span("unrelated") as unrelated:
        async with worker.running():
            await wait_until(lambda: handled == [1])
            await wait_until(
                lambda: any(s.name == "process plain" for s in spans.get_finished_spans())
            )
    process = next(s for s in spans.get_finished_spans() if s.name == "process plain")
    assert process.parent is None
    assert process.context.trace_id != unrelated.get_span_context().trace_id


async def test_a_failed_handler_marks_its_span_as_an_error(
    courier: Courier, spans: InMemorySpanExporter
) -> None:
    await courier.queue_create("failing", max_attempts=1)
    await courier.send("failing", 1)
    worker = Worker(courier, poll_interval=0.05)

    async def handle(message: Message, ctx: Context) -> None:
        raise RuntimeError("broken")

    worker.handle("failing", handle)
    async with worker.running():
        await wait_until(
            lambda: any(s.name == "process failing" for s in spans.get_finished_spans())
        )
    process = next(s for s in spans.get_finished_spans() if s.name == "process failing")
    assert process.status.status_code == trace.StatusCode.ERROR
    assert process.events[0].name == "exception"


async def test_without_a_recording_span_no_trace_headers_are_written(courier: Courier) -> None:
    await courier.queue_create("quiet")
    await courier.send("quiet", 1)
    async with courier.pool.connection() as conn:
        cur = await conn.execute("SELECT headers FROM pgmq.q_quiet")
        (headers,) = await cur.fetchone()
    assert "traceparent" not in headers


async def test_without_an_sdk_a_received_context_is_passed_on_to_what_the_handler_sends(
    courier: Courier,
) -> None:
    await courier.queue_create("first")
    await courier.queue_create("second")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await courier.send("first", 1, headers={"traceparent": traceparent})
    received: list[dict] = []

    async def relay(message: Message, ctx: Context) -> None:
        await ctx.send("second", message.payload)

    async def last(message: Message, ctx: Context) -> None:
        received.append(message.headers)

    worker = Worker(courier, poll_interval=0.05)
    worker.handle("first", relay)
    worker.handle("second", last)
    async with worker.running():
        await wait_until(lambda: received)
    # Nothing recorded here, so the span id is the sender's: the trace goes on.
    assert received[0]["traceparent"] == traceparent
