"""A link's health where an operator looks: the database-side metrics and the
console's live data show what `pgcourier links` shows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from pgcourier import metrics
from pgcourier.console import Console
from tests.helpers import wait_until
from tests.links_fixtures import Node, link_jobs, two_nodes


@pytest.fixture
async def linked(server_url: str, template_url: str) -> AsyncIterator[tuple[Node, Node]]:
    async with two_nodes(server_url, template_url) as (sender, receiver):
        await link_jobs(sender, receiver)
        yield sender, receiver


async def test_the_database_metrics_report_each_links_state_lag_and_kept_rows(
    linked: tuple[Node, Node],
) -> None:
    sender, receiver = linked
    registry = CollectorRegistry()
    outgoing = metrics.QueueStatsCollector(sender.url)
    incoming = metrics.QueueStatsCollector(receiver.url)
    registry.register(outgoing)
    try:

        def up() -> float | None:
            return registry.get_sample_value(
                "pgcourier_link_up",
                {
                    "direction": "out",
                    "node": receiver.name,
                    "mode": "replication",
                    "state": "streaming",
                },
            )

        # The subscription connects within a few seconds of the link.
        await wait_until(lambda: up() == 1, within=30, interval=0.2)
        kept = registry.get_sample_value(
            "pgcourier_link_retained_rows", {"direction": "out", "node": receiver.name}
        )
        assert kept is not None and kept >= 0
        assert (
            registry.get_sample_value(
                "pgcourier_link_lag_bytes", {"direction": "out", "node": receiver.name}
            )
            is not None
        )
        registry.unregister(outgoing)
        registry.register(incoming)
        assert (
            registry.get_sample_value(
                "pgcourier_link_up",
                {
                    "direction": "in",
                    "node": sender.name,
                    "mode": "replication",
                    "state": "streaming",
                },
            )
            == 1
        )
    finally:
        outgoing.close()
        incoming.close()


async def test_the_consoles_live_data_lists_each_databases_links(
    linked: tuple[Node, Node],
) -> None:
    sender, receiver = linked
    console = Console({"a": sender.url, "b": receiver.url}, sample_interval_s=0.1)
    app = console.app()
    async with console.lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:

            async def seen() -> dict[str, list[dict]] | None:
                data = (await client.get("/api/queues")).json()
                found = {db["name"]: db["links"] for db in data["databases"]}
                streaming = [
                    link
                    for links in found.values()
                    for link in links
                    if link["state"] == "streaming"
                ]
                return found if len(streaming) == 2 else None

            await wait_until(seen, within=30, interval=0.2)
            found = await seen()
            assert found is not None
            assert [(x["direction"], x["node"]) for x in found["a"]] == [("out", receiver.name)]
            assert [(x["direction"], x["node"]) for x in found["b"]] == [("in", sender.name)]
            page = await client.get("/")
            assert 'id="link-rows"' in page.text
