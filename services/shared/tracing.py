"""A server span per HTTP request, so that an order's trace starts at POST /orders.

The request's own traceparent header, if any, is its parent. The span is current
while the endpoint runs: what it sends carries the span's context in the messages'
headers (pgcourier/tracing.py), and the workers' spans continue the trace.

Spans are recorded where the process has an OpenTelemetry SDK. The shop installs one
only when SHOP_TRACE_DIR is set (`trace_to_files`): each process then appends its
spans, one JSON object a line, to a file of its own there. That is how the tests
follow an order across processes; a deployment would configure an SDK exporter
(OTLP, say) instead.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgcourier import tracing

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:
    trace = None  # type: ignore[assignment]

# Probes and scrapes would each start a trace of their own: they get no span.
_UNTRACED = frozenset({"/health", "/metrics"})


class ServerSpans:
    """ASGI middleware: a SERVER span named by method and route template."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or trace is None
            or not tracing.enabled()
            or scope["path"] in _UNTRACED
        ):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.tracer("services").start_as_current_span(
            method,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def trace_to_files(directory: str | None = None, *, instance: str) -> bool:
    """Installs an SDK tracer provider writing this process's spans to
    <directory>/<instance>-<pid>.jsonl when SHOP_TRACE_DIR (or directory) is set and
    the SDK is installed (a test dependency). Returns whether it did."""
    directory = directory or os.environ.get("SHOP_TRACE_DIR")
    if not directory:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return False
    path = Path(directory) / f"{instance}-{os.getpid()}.jsonl"

    class JsonLinesExporter(SpanExporter):
        def __init__(self) -> None:
            self._lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(json.dumps(span_record(s, instance)) + "\n" for s in spans)
            with self._lock, path.open("a") as f:
                f.write(lines)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": instance}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
    trace.set_tracer_provider(provider)
    return True


def span_record(span: Any, instance: str) -> dict[str, Any]:
    """A finished span as the files of trace_to_files hold it."""
    context = span.get_span_context()
    return {
        "instance": instance,
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
    }
