"""Trace context in every message (W3C traceparent and tracestate headers).

The OpenTelemetry API is an optional extra (`pip install pgcourier[tracing]`); no SDK
is needed to run. Sending opens a PRODUCER span (`send <queue>`) and writes its
context into the message's headers; the worker opens a CONSUMER span
(`process <queue>`) whose parent is that context, and runs the handler inside it, so
what the handler sends continues the same trace. A message without context (sent
by another pgmq client, or with tracing off) starts a new trace.

Spans are recorded only when the process has an SDK TracerProvider; without one the
API's spans are non-recording and cost little. Without the API installed, or with
PGCOURIER_TRACING=off, the hooks return shared no-op context managers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the optional extra is not installed
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .message import Message

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SYSTEM = "pgmq"

_enabled = trace is not None and os.environ.get("PGCOURIER_TRACING", "on").lower() not in (
    "0",
    "off",
    "false",
    "no",
)
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


def available() -> bool:
    """The OpenTelemetry API is installed."""
    return trace is not None


def enabled() -> bool:
    return _enabled


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on and trace is not None


_provider: Any = None


def use_provider(provider: Any) -> None:
    """Records spans with this TracerProvider rather than the global one (None: back
    to the global one). For tests and for a process that keeps several providers."""
    global _provider
    _provider = provider


def tracer(name: str = "pgcourier") -> Any:
    # Looked up each time (cheap: a proxy until a provider is set), so a provider
    # installed after this module was imported is used.
    if _provider is not None:
        return _provider.get_tracer(name)
    return trace.get_tracer(name)


@contextlib.contextmanager
def _sending(queue: str, count: int) -> Iterator[dict[str, str] | None]:
    with tracer().start_as_current_span(
        f"send {queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.batch.message_count": count,
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier or None


def sending(
    queue: str, *, count: int = 1
) -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """A PRODUCER span around one send (of `count` messages, or a publish to a topic);
    yields the headers carrying its context (None when there is nothing to carry)."""
    if not _enabled:
        return _NOTHING
    return _sending(queue, count)


def with_context(
    headers: dict[str, Any] | None, context: dict[str, str] | None
) -> dict[str, Any] | None:
    """The caller's headers plus the trace context; a traceparent the caller gave wins."""
    if not context:
        return headers
    if not headers:
        return context
    return {**context, **headers}


@contextlib.contextmanager
def _consuming(message: Message) -> Iterator[Any]:
    headers = message.headers
    parent = None
    if TRACEPARENT in headers:
        carrier = {TRACEPARENT: headers[TRACEPARENT]}
        if TRACESTATE in headers:
            carrier[TRACESTATE] = headers[TRACESTATE]
        parent = propagate.extract(carrier)
    else:
        # No context: a new trace, whatever span happens to be current in the worker.
        parent = trace.set_span_in_context(trace.INVALID_SPAN)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": message.queue,
        "messaging.message.id": message.id,
        "messaging.message.conversation_id": message.correlation_id,
        "pgcourier.msg_id": message.msg_id,
        "pgcourier.attempt": message.attempt,
    }
    if message.type is not None:
        attributes["pgcourier.type"] = message.type
    with tracer().start_as_current_span(
        f"process {message.queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def consuming(message: Message) -> contextlib.AbstractContextManager[Any]:
    """A CONSUMER span around handling one message, child of the sender's span."""
    if not _enabled:
        return _NOTHING
    return _consuming(message)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None if none."""
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
