"""Prometheus metrics: what this process sent and handled, and the queues' figures
as the database sees them.

prometheus_client is an optional extra (`pip install pgcourier[metrics]`): without it,
or with PGCOURIER_METRICS=off, every hook is a no-op on a shared object and costs a
method call. The process-side series live in prometheus_client's default registry,
so whatever serves that registry (a service's /metrics, start_http_server) shows
them; the database-side ones come from QueueStatsCollector, one query per scrape.

The hot path calls methods of a QueueMetrics, bound once per queue with its label
children; only the handled counter's `type` label is looked up per message, in a
dict of children made once per type.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from . import queries

try:
    import prometheus_client as prom
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # the optional extra is not installed
    prom = None
    Collector = object  # type: ignore[assignment,misc]

log = logging.getLogger("pgcourier.metrics")

OUTCOMES = ("ok", "retried", "dead", "rejected")
# Seconds: handlers from a millisecond to a minute; latency up to several minutes
# (a retry's backoff or a send delay counts in it).
_HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_enabled = prom is not None and os.environ.get("PGCOURIER_METRICS", "on").lower() not in (
    "0",
    "off",
    "false",
    "no",
)


def available() -> bool:
    """prometheus_client is installed."""
    return prom is not None


def enabled() -> bool:
    return _enabled


def enable(on: bool = True) -> None:
    """Turns the process-side hooks on or off (workers bind theirs when they start)."""
    global _enabled
    _enabled = on and prom is not None


class _Series:
    """The metric families, created once per process on first use."""

    def __init__(self) -> None:
        assert prom is not None
        self.sent = prom.Counter(
            "pgcourier_messages_sent", "Messages written to a queue by this process", ["queue"]
        )
        self.claimed = prom.Counter(
            "pgcourier_messages_claimed", "Messages claimed by this process's workers", ["queue"]
        )
        self.handled = prom.Counter(
            "pgcourier_messages_handled",
            "Messages whose handling ended, by outcome: ok, retried (failed, will be tried "
            "again), dead (failed the last attempt) or rejected (RejectMessage, forbidden "
            "sender, no handler, unreadable)",
            ["queue", "type", "outcome"],
        )
        self.handler_seconds = prom.Histogram(
            "pgcourier_handler_duration_seconds",
            "Time a handler ran, whatever its outcome",
            ["queue", "type"],
            buckets=_HANDLER_BUCKETS,
        )
        self.latency_seconds = prom.Histogram(
            "pgcourier_send_to_handle_seconds",
            "From the message's enqueue (database clock) to its handler's end (this "
            "process's clock), send delays and retry backoffs included",
            ["queue"],
            buckets=_LATENCY_BUCKETS,
        )
        self.claim_seconds = prom.Histogram(
            "pgcourier_claim_duration_seconds",
            "Round trip of one claim (one statement, any number of messages)",
            ["queue"],
            buckets=_CLAIM_BUCKETS,
        )
        self.wakeups = prom.Counter(
            "pgcourier_wakeups",
            "Times a claim loop looked for messages because of a NOTIFY (by=notify) or "
            "because its wait ran out (by=poll)",
            ["queue", "by"],
        )
        self.listen_reconnects = prom.Counter(
            "pgcourier_listen_reconnects",
            "LISTEN connections made again after one was lost",
        )
        self.lease_renewals = prom.Counter(
            "pgcourier_lease_renewals", "Leases of messages in flight renewed", ["queue"]
        )
        self.fenced = prom.Counter(
            "pgcourier_acks_fenced",
            "Outcomes (acknowledgements, retries, dead letters) not written because the "
            "message's lease had run out and it was claimed again",
            ["queue"],
        )


_series: _Series | None = None
_series_lock = threading.Lock()


def _families() -> _Series:
    global _series
    if _series is None:
        with _series_lock:
            if _series is None:
                _series = _Series()
    return _series


if _enabled:
    # Declared at once, so that a process serving /metrics lists every series (with no
    # samples yet) before its first message.
    _families()


class QueueMetrics:
    """One queue's series with their labels bound: what a consumer calls per message."""

    def __init__(self, queue: str) -> None:
        s = _families()
        self.queue = queue
        self._handled = s.handled
        self._handler_seconds = s.handler_seconds
        self._claimed = s.claimed.labels(queue)
        self._latency = s.latency_seconds.labels(queue)
        self._claim_seconds = s.claim_seconds.labels(queue)
        self._notify = s.wakeups.labels(queue, "notify")
        self._poll = s.wakeups.labels(queue, "poll")
        self._renewals = s.lease_renewals.labels(queue)
        self._fenced = s.fenced.labels(queue)
        # type -> (ok, retried, dead, rejected counters, duration histogram)
        self._by_type: dict[str | None, tuple[Any, ...]] = {}

    def _bind(self, type: str | None) -> tuple[Any, ...]:
        label = type or ""
        bound = (
            *(self._handled.labels(self.queue, label, o) for o in OUTCOMES),
            self._handler_seconds.labels(self.queue, label),
        )
        self._by_type[type] = bound
        return bound

    def claimed(self, count: int, seconds: float) -> None:
        self._claim_seconds.observe(seconds)
        if count:
            self._claimed.inc(count)

    def handled(self, type: str | None, outcome: int, seconds: float, latency_s: float) -> None:
        """outcome: an index into OUTCOMES (OK, RETRIED, DEAD, REJECTED)."""
        bound = self._by_type.get(type) or self._bind(type)
        bound[outcome].inc()
        bound[4].observe(seconds)
        self._latency.observe(latency_s)

    def outcome(self, type: str | None, outcome: int) -> None:
        """An outcome without a handler run (an unreadable message, a forbidden sender)."""
        bound = self._by_type.get(type) or self._bind(type)
        bound[outcome].inc()

    def woken(self, *, by_notify: bool) -> None:
        (self._notify if by_notify else self._poll).inc()

    def renewed(self, count: int) -> None:
        if count:
            self._renewals.inc(count)

    def fenced(self, count: int) -> None:
        if count:
            self._fenced.inc(count)


OK, RETRIED, DEAD, REJECTED = range(4)


class _Off:
    """The hooks when metrics are off: nothing to count."""

    def claimed(self, count: int, seconds: float) -> None:
        pass

    def handled(self, type: str | None, outcome: int, seconds: float, latency_s: float) -> None:
        pass

    def outcome(self, type: str | None, outcome: int) -> None:
        pass

    def woken(self, *, by_notify: bool) -> None:
        pass

    def renewed(self, count: int) -> None:
        pass

    def fenced(self, count: int) -> None:
        pass


OFF = _Off()


def for_queue(queue: str) -> QueueMetrics | _Off:
    """The queue's hooks (bound once, when a worker starts), or OFF."""
    return QueueMetrics(queue) if _enabled else OFF


_sent_children: dict[str, Any] = {}


def sent(queue: str, count: int) -> None:
    """Messages written to a queue (in the caller's transaction too, committed or not)."""
    if not _enabled:
        return
    child = _sent_children.get(queue)
    if child is None:
        child = _sent_children[queue] = _families().sent.labels(queue)
    child.inc(count)


def listen_reconnected() -> None:
    if _enabled:
        _families().listen_reconnects.inc()


# -- the database side -------------------------------------------------------------


class QueueStatsCollector(Collector):
    """Every queue's figures from pgcourier.queues, in one query per scrape.

    Synchronous (prometheus_client collects in its HTTP server's thread), on one
    connection of its own kept between scrapes and made again after an error. A
    scrape that cannot reach the database reports pgcourier_queue_stats_up 0 and no
    queue figures rather than failing.
    """

    def __init__(self, conninfo: str, *, timeout_s: float = 5.0) -> None:
        if prom is None:
            raise ImportError("prometheus_client is not installed: pip install pgcourier[metrics]")
        self.conninfo = conninfo
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self.scrapes = 0

    def _rows(self) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.timeout_s)),
                options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                application_name="pgcourier metrics",
            )
        return self._conn.execute(queries.query("queue_stats")).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def collect(self) -> Iterator[Any]:
        with self._lock:
            self.scrapes += 1
            try:
                rows = self._rows()
            except (psycopg.Error, OSError) as exc:
                log.warning("reading pgcourier.queues failed: %s", exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                rows = None
        up = GaugeMetricFamily(
            "pgcourier_queue_stats_up", "1 when the last scrape read pgcourier.queues"
        )
        up.add_metric([], 0 if rows is None else 1)
        yield up
        if rows is None:
            return
        messages = GaugeMetricFamily(
            "pgcourier_queue_messages",
            "Messages in the queue by state: ready (claimable now), in_flight (claimed, "
            "not yet acknowledged), delayed (a send delay or a retry's backoff)",
            labels=["queue", "state"],
        )
        dead = GaugeMetricFamily(
            "pgcourier_queue_dead_letters", "Dead letters of the queue", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "pgcourier_queue_oldest_ready_age_seconds",
            "How long the oldest ready message has waited (0 when none is ready)",
            labels=["queue"],
        )
        for queue, ready, in_flight, delayed, dead_count, oldest_s in rows:
            messages.add_metric([queue, "ready"], ready)
            messages.add_metric([queue, "in_flight"], in_flight)
            messages.add_metric([queue, "delayed"], delayed)
            dead.add_metric([queue], dead_count)
            oldest.add_metric([queue], oldest_s or 0.0)
        yield messages
        yield dead
        yield oldest
        scrapes = CounterMetricFamily(
            "pgcourier_queue_stats_scrapes", "Scrapes of pgcourier.queues by this collector"
        )
        scrapes.add_metric([], self.scrapes)
        yield scrapes


def serve_queue_stats(
    conninfo: str, *, port: int, host: str = "127.0.0.1"
) -> tuple[Any, QueueStatsCollector]:
    """Serves the database-side figures on http://host:port/metrics, in a thread of
    its own; returns (server, collector). `python -m pgcourier metrics` runs this."""
    if prom is None:
        raise ImportError("prometheus_client is not installed: pip install pgcourier[metrics]")
    registry = prom.CollectorRegistry()
    collector = QueueStatsCollector(conninfo)
    registry.register(collector)
    server, _thread = prom.start_http_server(port, addr=host, registry=registry)
    return server, collector


def serve_process_metrics(*, port: int, host: str = "127.0.0.1") -> Any:
    """Serves this process's series (the default registry) on http://host:port/metrics,
    in a thread of its own; for worker processes that have no HTTP app."""
    if prom is None:
        raise ImportError("prometheus_client is not installed: pip install pgcourier[metrics]")
    server, _thread = prom.start_http_server(port, addr=host)
    return server


def exposition() -> tuple[bytes, str]:
    """(this process's series in the text format, its content type), for an app's route."""
    if prom is None:
        return b"# prometheus_client is not installed\n", "text/plain; charset=utf-8"
    return prom.generate_latest(), prom.CONTENT_TYPE_LATEST


def serve_until_interrupted(conninfo: str, *, port: int, host: str = "127.0.0.1") -> int:
    """`python -m pgcourier metrics`: reads pgcourier.queues once (a wrong URL or a
    missing schema fails here, not at the first scrape), then serves until Ctrl-C or
    SIGTERM. Returns the exit code."""
    if prom is None:
        print(
            "error: prometheus_client is not installed: pip install pgcourier[metrics]",
            file=sys.stderr,
        )
        return 1
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(queries.query("queue_stats")).fetchall()
    except psycopg.Error as exc:
        print(f"error: cannot read pgcourier.queues: {str(exc).strip()}", file=sys.stderr)
        return 1
    server, collector = serve_queue_stats(conninfo, port=port, host=host)
    print(f"serving the queues' figures on http://{host}:{port}/metrics", flush=True)
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        collector.close()
    return 0
