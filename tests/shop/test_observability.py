"""What the shop shows of itself: /metrics from every process, and one trace per
order from POST /orders through every saga step, across the service processes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import kept_keys
from services.payments.app import create_app
from services.shared.settings import ServiceSettings
from services.supervisor import Supervisor
from services.topology import processes
from tests.helpers import wait_until_sync
from tests.shop.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, made_shop_databases, serve_app
from tests.shop.test_e2e import (
    RunningShop,
    auth,
    create_product,
    free_port,
    wait_known_to_orders,
)

pytestmark = pytest.mark.timeout(300)


async def test_a_service_serves_its_metrics_without_a_token(
    settings_for: Callable[[str], ServiceSettings],
) -> None:
    async with serve_app(create_app(settings_for("payments"))) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE pgcourier_messages_sent_total counter" in response.text


@contextlib.contextmanager
def traced_shop(server_url: str, folder: Path) -> Iterator[tuple[RunningShop, dict[str, int]]]:
    """Every process of the one-database shop, each writing its spans to folder/traces
    (SHOP_TRACE_DIR) and each worker serving /metrics on a port of its own."""
    traces = folder / "traces"
    traces.mkdir()
    ports = {s: free_port() for s in ("users", "products", "orders", "payments")}
    worker_ports: dict[str, int] = {}
    with made_shop_databases(server_url, "one") as databases:
        shop = RunningShop(
            databases,
            {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
            Supervisor(log_dir=folder / "logs"),
            ports,
            kept_keys(folder / "keys"),
        )
        try:
            for process in processes(replicas=1, topology="one"):
                env = {**shop.env(process), "SHOP_TRACE_DIR": str(traces)}
                if process.role == "worker":
                    port = free_port()
                    worker_ports[process.instance] = port
                    env["SHOP_METRICS_PORT"] = str(port)
                shop.supervisor.start(process, env)
            shop.supervisor.wait_healthy(shop.urls)
            yield shop, worker_ports
        finally:
            shop.supervisor.stop_all()


def read_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in (folder / "traces").glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line]
    return spans


def order_trace(spans: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the POST /orders span, every span of its trace)."""
    root = next(s for s in spans if s["name"] == "POST /orders")
    return root, [s for s in spans if s["trace_id"] == root["trace_id"]]


def test_one_order_is_one_trace_across_the_processes_and_every_process_serves_metrics(
    server_url: str, tmp_path: Path
) -> None:
    with traced_shop(server_url, tmp_path) as (shop, worker_ports):
        admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        product_id = create_product(shop, admin, stock=5)
        wait_known_to_orders(shop, product_id)
        customer = shop.customer()
        with shop.client() as http:
            placed = http.post(
                f"{shop.urls['orders']}/orders",
                headers=auth(customer),
                json={
                    "lines": [{"product_id": product_id, "quantity": 1}],
                    "card_token": "tok_visa",
                },
            )
            assert placed.status_code == 202, placed.text
            order_url = f"{shop.urls['orders']}/orders/{placed.json()['order_id']}"
            wait_until_sync(
                lambda: http.get(order_url, headers=auth(customer)).json()["status"] == "confirmed",
                within=60,
                interval=0.1,
                failing=lambda: "the order was never confirmed",
            )

            # Every process serves its own series; the workers on ports of their own.
            for service, url in shop.urls.items():
                response = http.get(f"{url}/metrics")
                assert response.status_code == 200, service
            for instance, port in worker_ports.items():
                response = http.get(f"http://127.0.0.1:{port}/metrics")
                queue = instance.split("-")[0] + "_inbox"
                assert f'pgcourier_messages_handled_total{{outcome="ok",queue="{queue}"' in (
                    response.text
                ), instance
            orders_http = http.get(f"{shop.urls['orders']}/metrics").text
            assert "pgcourier_messages_sent_total{" in orders_http

        # The spans of the order's trace, once each process has written them.
        expected = {"orders-http", "products-worker-1", "payments-worker-1", "orders-worker-1"}
        seen: list[Any] = []

        def all_written() -> bool:
            seen[:] = order_trace(read_spans(tmp_path))
            root, spans = seen
            consumers = [s for s in spans if s["kind"] == "CONSUMER"]
            return {s["instance"] for s in consumers} | {root["instance"]} >= expected

        wait_until_sync(
            all_written,
            within=20,
            interval=0.2,
            failing=lambda: str(sorted({s["instance"] for s in seen[1]})),
        )
        root, spans = seen
        consumers = [s for s in spans if s["kind"] == "CONSUMER"]

    assert root["kind"] == "SERVER" and root["parent_id"] is None
    assert root["instance"] == "orders-http"
    by_id = {s["span_id"]: s for s in spans}
    for span in consumers:
        # Each handler's span leads back, sender by sender, to POST /orders.
        chain = [span]
        while chain[-1]["parent_id"] is not None:
            chain.append(by_id[chain[-1]["parent_id"]])
        assert chain[-1] is root, [s["name"] for s in chain]
        assert chain[1]["kind"] == "PRODUCER"  # its parent: the send that carried it
    assert {s["attributes"]["messaging.destination.name"] for s in consumers} >= {
        "products_inbox",
        "payments_inbox",
        "orders_inbox",
    }
