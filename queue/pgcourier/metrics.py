"""Prometheus metrics: what this process sent and handled, and the queues' figures
as the database sees them.

prometheus_client is an optional extra (`pip install pgcourier[metrics]`): without it,
or with PGCOURIER_METRICS=off, every hook is a no-op on a shared object and costs a
method call. The process-side series live in prometheus_client's default registry,
so whatever serves that registry (a service's /metrics, start_http_server) shows
them; the database-side ones come from QueueStatsCollector, one query per scrape.

The hot path calls methods of a QueueMetrics, one per queue, which only adds to plain
numbers (no lock, no label lookup but the message type's, in a dict); a collector in
prometheus_client's default registry turns them into series at each scrape.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import psycopg

from . import queries
from .link_metrics import link_families, read_links
from .links import LinkInfo

try:
    import prometheus_client as prom
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError:  # the optional extra is not installed
    # Checked as if installed (the extra is in the dev install); without it, these
    # names say so: prom None, and collectors derive from object.
    prom = None  # type: ignore[assignment]
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


class _Histogram:
    """Bucket counts and a sum, kept as plain numbers: observing is a bisect and two
    additions (prometheus_client's own takes a lock per bucket, sum and count).
    Only the event loop's thread writes; a scrape's thread reads."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: over every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative, as the exposition format has them."""
        total, found = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            found.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return found


class QueueMetrics:
    """One queue's figures in this process: what a consumer calls per message. One
    instance per queue (for_queue), shared by its consumer, completer, renewer and
    listener; read by the collector at each scrape."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.claimed_count = 0
        self.claim_seconds = _Histogram(_CLAIM_BUCKETS)
        self.latency_seconds = _Histogram(_LATENCY_BUCKETS)
        self.notify_wakeups = 0
        self.poll_wakeups = 0
        self.renewals = 0
        self.fenced_count = 0
        # type -> ([ok, retried, dead, rejected], handler duration histogram)
        self.by_type: dict[str | None, tuple[list[int], _Histogram]] = {}

    def _bind(self, type: str | None) -> tuple[list[int], _Histogram]:
        bound = self.by_type[type] = ([0, 0, 0, 0], _Histogram(_HANDLER_BUCKETS))
        return bound

    def claimed(self, count: int, seconds: float) -> None:
        self.claim_seconds.observe(seconds)
        self.claimed_count += count

    def handled(self, type: str | None, outcome: int, seconds: float, latency_s: float) -> None:
        """outcome: an index into OUTCOMES (OK, RETRIED, DEAD, REJECTED)."""
        outcomes, duration = self.by_type.get(type) or self._bind(type)
        outcomes[outcome] += 1
        duration.observe(seconds)
        self.latency_seconds.observe(latency_s)

    def outcome(self, type: str | None, outcome: int) -> None:
        """An outcome without a handler run (an unreadable message, a forbidden sender)."""
        outcomes, _ = self.by_type.get(type) or self._bind(type)
        outcomes[outcome] += 1

    def woken(self, *, by_notify: bool) -> None:
        if by_notify:
            self.notify_wakeups += 1
        else:
            self.poll_wakeups += 1

    def renewed(self, count: int) -> None:
        self.renewals += count

    def fenced(self, count: int) -> None:
        self.fenced_count += count


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
_queues: dict[str, QueueMetrics] = {}
_sent: dict[str, int] = {}
_listen_reconnects = 0


def for_queue(queue: str) -> QueueMetrics | _Off:
    """The queue's hooks (looked up once, when a worker starts), or OFF."""
    if not _enabled:
        return OFF
    found = _queues.get(queue)
    if found is None:
        found = _queues[queue] = QueueMetrics(queue)
    return found


def sent(queue: str, count: int) -> None:
    """Messages written to a queue (in the caller's transaction too, committed or not)."""
    if _enabled:
        _sent[queue] = _sent.get(queue, 0) + count


def listen_reconnected() -> None:
    global _listen_reconnects
    if _enabled:
        _listen_reconnects += 1


class ProcessCollector(Collector):
    """This process's series, built from the figures above at each scrape."""

    def collect(self) -> Iterator[Any]:
        queues = list(_queues.values())

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return CounterMetricFamily(name, doc, labels=labels)

        sent = counter("pgcourier_messages_sent", "Messages written to a queue", ["queue"])
        for queue, count in list(_sent.items()):
            sent.add_metric([queue], count)
        claimed = counter("pgcourier_messages_claimed", "Messages claimed by workers", ["queue"])
        handled = counter(
            "pgcourier_messages_handled",
            "Messages whose handling ended, by outcome: ok, retried (failed, will be tried "
            "again), dead (failed the last attempt) or rejected (RejectMessage, forbidden "
            "sender, no handler, unreadable)",
            ["queue", "type", "outcome"],
        )
        duration = HistogramMetricFamily(
            "pgcourier_handler_duration_seconds",
            "Time a handler ran, whatever its outcome",
            labels=["queue", "type"],
        )
        latency = HistogramMetricFamily(
            "pgcourier_send_to_handle_seconds",
            "From the message's enqueue (database clock) to its handler's end (this "
            "process's clock), send delays and retry backoffs included",
            labels=["queue"],
        )
        claims = HistogramMetricFamily(
            "pgcourier_claim_duration_seconds",
            "Round trip of one claim (one statement, any number of messages)",
            labels=["queue"],
        )
        wakeups = counter(
            "pgcourier_wakeups",
            "Times a claim loop was woken by a NOTIFY (by=notify) or looked again because "
            "its wait ran out (by=poll)",
            ["queue", "by"],
        )
        renewals = counter("pgcourier_lease_renewals", "Leases renewed", ["queue"])
        fenced = counter(
            "pgcourier_acks_fenced",
            "Outcomes (acknowledgements, retries, dead letters) not written because the "
            "message's lease had run out and it was claimed again",
            ["queue"],
        )
        for m in queues:
            q = [m.queue]
            claimed.add_metric(q, m.claimed_count)
            for type, (outcomes, seconds) in list(m.by_type.items()):
                for name, count in zip(OUTCOMES, outcomes, strict=True):
                    handled.add_metric([m.queue, type or "", name], count)
                duration.add_metric([m.queue, type or ""], seconds.buckets(), seconds.sum)
            latency.add_metric(q, m.latency_seconds.buckets(), m.latency_seconds.sum)
            claims.add_metric(q, m.claim_seconds.buckets(), m.claim_seconds.sum)
            wakeups.add_metric([m.queue, "notify"], m.notify_wakeups)
            wakeups.add_metric([m.queue, "poll"], m.poll_wakeups)
            renewals.add_metric(q, m.renewals)
            fenced.add_metric(q, m.fenced_count)
        reconnects = counter(
            "pgcourier_listen_reconnects", "LISTEN connections made again after one was lost", []
        )
        reconnects.add_metric([], _listen_reconnects)
        yield from (sent, claimed, handled, duration, latency, claims, wakeups)
        yield from (renewals, fenced, reconnects)


if prom is not None:
    # In the default registry, which prometheus_client's servers and generate_latest use.
    prom.REGISTRY.register(ProcessCollector())


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

    def _rows(self) -> tuple[list[tuple[Any, ...]], list[LinkInfo]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.timeout_s)),
                options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                application_name="pgcourier metrics",
            )
        rows = self._conn.execute(queries.query("queue_stats")).fetchall()
        return rows, read_links(self._conn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def collect(self) -> Iterator[Any]:
        with self._lock:
            self.scrapes += 1
            found: list[LinkInfo] = []
            try:
                rows, found = self._rows()
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
        yield from link_families(found)
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
