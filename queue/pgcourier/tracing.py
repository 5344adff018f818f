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
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # The headers carry W3C trace context whatever else a process propagates.
    _W3C = TraceContextTextMapPropagator()
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


# Keyed by the provider itself, not its id: an id may be reused by a later provider.
_tracers: dict[tuple[Any, str], Any] = {}


def tracer(name: str = "pgcourier") -> Any:
    """The named tracer of the provider in use. Kept per provider: the SDK's get_tracer
    costs more than the span it starts. The global provider's is a proxy that follows
    a provider installed after this module was imported."""
    provider = _provider or trace.get_tracer_provider()
    key = (provider, name)
    found = _tracers.get(key)
    if found is None:
        found = _tracers[key] = provider.get_tracer(name)
    return found


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
        _W3C.inject(carrier)
        yield carrier or None


def sending(
    queue: str, *, count: int = 1
) -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """A PRODUCER span around one send (of `count` messages, or a publish to a topic);
    yields the headers carrying its context (None when there is nothing to carry)."""
    if not _enabled:
        return _NOTHING
    if not _recording():
        # No SDK: no span to start, but a context received (a handler's message's)
        # is passed on, so that the trace goes on through this process.
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        return contextlib.nullcontext(carrier or None)
    return _sending(queue, count)


def _recording() -> bool:
    """Whether spans are recorded here: a provider given to use_provider, or an SDK's
    set as the global one (until then the global one is a proxy of no-op tracers)."""
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


class _Attached:
    """Makes a context current for a block: a received trace context, without a span."""

    __slots__ = ("context", "token")

    def __init__(self, context: Any) -> None:
        self.context = context

    def __enter__(self) -> None:
        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


def with_context(
    headers: dict[str, Any] | None, context: dict[str, str] | None
) -> dict[str, Any] | None:
    """The caller's headers plus the trace context; a traceparent the caller gave wins."""
    if not context:
        return headers
    if not headers:
        return context
    return {**context, **headers}


class _Consuming:
    """A CONSUMER span, current for a block; a class rather than a generator: this
    runs for every message."""

    __slots__ = ("span", "token")

    def __init__(self, message: Message) -> None:
        # Few attributes: the SDK checks each one.
        attributes: dict[str, Any] = {
            "messaging.destination.name": message.queue,
            "messaging.message.id": message.id,
            "messaging.message.conversation_id": message.correlation_id,
            "pgcourier.attempt": message.attempt,
        }
        if message.type is not None:
            attributes["pgcourier.type"] = message.type
        self.span = tracer().start_span(
            f"process {message.queue}",
            context=_received(message.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def __enter__(self) -> Any:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, Exception):
                self.span.record_exception(exc)
                self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            otel_context.detach(self.token)
            self.span.end()


# Parsed contexts by (traceparent, tracestate): the messages of one send_batch share
# theirs, and parsing costs more than the rest of carrying it. Contexts are immutable.
_parsed: dict[tuple[Any, Any], Any] = {}
_PARSED_MAX = 1024


def _received(headers: dict[str, Any]) -> Any:
    """The context a message carries; without one, an empty context (a new trace,
    whatever span happens to be current in the worker)."""
    traceparent = headers.get(TRACEPARENT)
    if type(traceparent) is not str:  # none, or not W3C's (another client's headers)
        return otel_context.Context()
    tracestate = headers.get(TRACESTATE)
    key = (traceparent, tracestate if type(tracestate) is str else None)
    found = _parsed.get(key)
    if found is None:
        carrier = {TRACEPARENT: traceparent}
        if key[1] is not None:
            carrier[TRACESTATE] = key[1]
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        found = _parsed[key] = _W3C.extract(carrier)
    return found


def consuming(message: Message) -> contextlib.AbstractContextManager[Any]:
    """A CONSUMER span around handling one message, child of the sender's span; with
    no SDK, the message's context made current, so that what the handler sends goes
    on with the trace."""
    if not _enabled:
        return _NOTHING
    if not _recording():
        if TRACEPARENT not in message.headers and not otel_context.get_current():
            return _NOTHING  # nothing received, nothing current: nothing to pass on
        return _Attached(_received(message.headers))
    return _Consuming(message)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None if none."""
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
