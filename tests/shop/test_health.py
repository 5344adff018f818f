"""A service's /health tells the truth about its consumers, not only its database."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from services.payments.app import create_app
from services.payments.handlers import setup
from services.shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.shop.conftest import run_service_worker, serve_app, service_in_both_topologies

shop_url = service_in_both_topologies("payments", "its own inbox and heartbeats only")


async def test_health_is_degraded_while_no_worker_consumes_and_ok_while_one_does(
    settings_for: Callable[[str], ServiceSettings],
) -> None:
    settings = settings_for("payments")
    async with serve_app(create_app(settings)) as client:
        before = (await client.get("/health")).json()
        assert before["status"] == "degraded"
        assert before["reasons"] == ["no live consumer of payments_inbox"]

        async with run_service_worker(settings, setup):

            async def healthy() -> bool:
                return (await client.get("/health")).json()["status"] == "ok"

            await wait_until(healthy)
            body = (await client.get("/health")).json()
            assert body["consumer"]["live_workers"] == 1
        # Stopped: the worker's row is gone, and /health says so at once.
        after = await client.get("/health")
        assert after.status_code == 200
        assert after.json()["status"] == "degraded"


async def test_health_is_degraded_when_the_oldest_ready_message_waited_too_long(
    settings_for: Callable[[str], ServiceSettings], shop_url: str
) -> None:
    settings = settings_for("payments")
    with psycopg.connect(shop_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgmq.q_payments_inbox (vt, message)"
            " VALUES (now() - interval '5 minutes', '{}')"
        )
    async with serve_app(create_app(settings)) as client:
        body = (await client.get("/health")).json()
    assert body["status"] == "degraded"
    assert any("oldest ready message on payments_inbox" in r for r in body["reasons"])
