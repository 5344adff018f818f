"""Links in the database-side metrics: what `pgcourier links` shows, as gauges read in
the same scrape as the queues' figures (metrics.QueueStatsCollector)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from .links import LinkInfo

# streaming (replication) and relay are a link doing its work; anything else
# (slot missing or lost, receiver disconnected, no apply worker, disabled) is not.
WORKING = ("streaming", "relay")


def read_links(conn: psycopg.Connection) -> list[LinkInfo]:
    cur = conn.execute(
        "SELECT direction, node, mode, state, lag_bytes, lag_s, retained, expired,"
        " slot_name, slot_status, last_error FROM pgcourier.links ORDER BY direction, node"
    )
    return [LinkInfo(*row) for row in cur.fetchall()]


def link_families(found: Sequence[LinkInfo]) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    labels = ["direction", "node"]
    up = GaugeMetricFamily(
        "pgcourier_link_up",
        "1 when the link is streaming (or relayed), 0 otherwise; its state as a label",
        labels=[*labels, "mode", "state"],
    )
    lag_bytes = GaugeMetricFamily(
        "pgcourier_link_lag_bytes",
        "WAL the receiver has not confirmed yet (outgoing replication links)",
        labels=labels,
    )
    lag_s = GaugeMetricFamily(
        "pgcourier_link_lag_seconds",
        "Outgoing: age of the oldest row kept for the receiver; incoming: since the "
        "sender last sent anything",
        labels=labels,
    )
    retained = GaugeMetricFamily(
        "pgcourier_link_retained_rows",
        "Outbox rows kept until the receiver is known to have them",
        labels=labels,
    )
    for link in found:
        key = [link.direction, link.node]
        up.add_metric([*key, link.mode, link.state], 1 if link.state in WORKING else 0)
        if link.lag_bytes is not None:
            lag_bytes.add_metric(key, link.lag_bytes)
        if link.lag_s is not None:
            lag_s.add_metric(key, link.lag_s)
        if link.retained is not None:
            retained.add_metric(key, link.retained)
    yield from (up, lag_bytes, lag_s, retained)
