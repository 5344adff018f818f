"""Prometheus metrics: the worker's counters move by what happened to each message,
and the database collector reads every queue's figures in one query."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from psycopg import sql

from pgcourier import Context, Courier, Message, RejectMessage, Worker, metrics
from tests.helpers import scalar, wait_until


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _queue() -> str:
    # The registry is the process's: a queue name of its own keeps the counts apart.
    return f"m_{uuid.uuid4().hex[:10]}"


async def test_handled_retried_dead_and_rejected_messages_are_counted_by_outcome(
    courier: Courier,
) -> None:
    queue = _queue()
    await courier.queue_create(queue, max_attempts=2, backoff_base=0.01, backoff_max=0.01)
    failed_once: set[str] = set()

    async def handle(message: Message, ctx: Context) -> None:
        kind = message.payload["kind"]
        if kind == "flaky" and message.id not in failed_once:
            failed_once.add(message.id)
            raise RuntimeError("first attempt fails")
        if kind == "broken":
            raise RuntimeError("always fails")
        if kind == "refused":
            raise RejectMessage("not for us")

    kinds = ["ok", "ok", "ok", "flaky", "broken", "refused"]
    for kind in kinds:
        await courier.send(queue, {"kind": kind}, type="job")
    assert _value("pgcourier_messages_sent_total", queue=queue) == len(kinds)

    worker = Worker(courier, poll_interval=0.05)
    worker.handle(queue, handle)
    async with worker.running():
        await wait_until(
            lambda: (
                _value("pgcourier_messages_handled_total", queue=queue, type="job", outcome="ok")
                == 4
                and _value(
                    "pgcourier_messages_handled_total", queue=queue, type="job", outcome="dead"
                )
                == 1
            )
        )

        async def both_dead() -> bool:
            return await scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter") == 2

        await wait_until(both_dead)

    def handled(outcome: str) -> float:
        return _value("pgcourier_messages_handled_total", queue=queue, type="job", outcome=outcome)

    assert handled("ok") == 4  # three at once, the flaky one at its second attempt
    assert handled("retried") == 2  # flaky and broken, once each
    assert handled("dead") == 1  # broken, out of attempts
    assert handled("rejected") == 1
    assert _value("pgcourier_messages_claimed_total", queue=queue) == 8
    assert _value("pgcourier_handler_duration_seconds_count", queue=queue, type="job") == 8
    assert _value("pgcourier_send_to_handle_seconds_count", queue=queue) == 8
    assert _value("pgcourier_claim_duration_seconds_count", queue=queue) >= 1


async def test_a_worker_counts_its_wake_ups_by_notify_and_by_poll(courier: Courier) -> None:
    queue = _queue()
    await courier.queue_create(queue)
    seen: list[int] = []

    async def handle(message: Message, ctx: Context) -> None:
        seen.append(message.payload)

    worker = Worker(courier, poll_interval=0.05)
    worker.handle(queue, handle)
    async with worker.running():
        await wait_until(lambda: _value("pgcourier_wakeups_total", queue=queue, by="poll") >= 1)
        await courier.send(queue, 1)
        await wait_until(lambda: seen == [1])
        await wait_until(lambda: _value("pgcourier_wakeups_total", queue=queue, by="notify") >= 1)


async def test_the_database_collector_reports_a_ready_message_and_the_dead_letters(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("ready_one")
    await courier.queue_create("empty_one")
    await courier.send("ready_one", {"n": 1})
    await courier.send("ready_one", {"n": 2}, delay=3600)
    registry = CollectorRegistry()
    collector = metrics.QueueStatsCollector(database_url)
    registry.register(collector)
    try:

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        assert value("pgcourier_queue_stats_up") == 1
        assert value("pgcourier_queue_messages", queue="ready_one", state="ready") == 1
        assert value("pgcourier_queue_messages", queue="ready_one", state="delayed") == 1
        assert value("pgcourier_queue_messages", queue="ready_one", state="in_flight") == 0
        assert value("pgcourier_queue_messages", queue="empty_one", state="ready") == 0
        assert value("pgcourier_queue_dead_letters", queue="ready_one") == 0
        assert value("pgcourier_queue_oldest_ready_age_seconds", queue="ready_one") >= 0
    finally:
        collector.close()


def test_the_database_collector_reports_down_rather_than_failing_the_scrape() -> None:
    registry = CollectorRegistry()
    collector = metrics.QueueStatsCollector("postgresql://nobody@127.0.0.1:1/none", timeout_s=1)
    registry.register(collector)
    assert registry.get_sample_value("pgcourier_queue_stats_up") == 0
    assert (
        registry.get_sample_value("pgcourier_queue_messages", {"queue": "x", "state": "ready"})
        is None
    )


async def test_the_metrics_server_serves_the_queues_figures_over_http(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("served")
    await courier.send("served", 1)
    server, collector = metrics.serve_queue_stats(database_url, port=0)
    try:
        port = server.server_port
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert 'pgcourier_queue_messages{queue="served",state="ready"} 1.0' in response.text
    finally:
        server.shutdown()
        collector.close()


def test_turned_off_the_hooks_count_nothing() -> None:
    queue = _queue()
    metrics.enable(False)
    try:
        assert metrics.for_queue(queue) is metrics.OFF
        metrics.sent(queue, 3)
    finally:
        metrics.enable(True)
    assert _value("pgcourier_messages_sent_total", queue=queue) == 0
    metrics.sent(queue, 2)
    assert _value("pgcourier_messages_sent_total", queue=queue) == 2


def test_the_metrics_command_fails_at_once_on_a_database_it_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgcourier.cli import main

    code = main(
        ["metrics", "--port", "9", "--database-url", "postgresql://nobody@127.0.0.1:1/none"]
    )
    assert code == 1
    assert "cannot read pgcourier.queues" in capsys.readouterr().err


def test_the_library_imports_and_sends_without_the_optional_extras(database_url: str) -> None:
    # A process where prometheus_client and opentelemetry cannot be imported.
    script = f"""
import asyncio, sys
sys.modules["prometheus_client"] = None
sys.modules["opentelemetry"] = None
from pgcourier import Context, Courier, Message, Worker, metrics, tracing
assert not metrics.available() and not metrics.enabled()
assert not tracing.available() and not tracing.enabled()

async def main():
    async with Courier({database_url!r}) as courier:
        await courier.queue_create("bare")
        await courier.send("bare", 1)
        seen = []

        async def handle(message: Message, ctx: Context) -> None:
            seen.append(message.payload)
            worker.stop()

        worker = Worker(courier, poll_interval=0.05)
        worker.handle("bare", handle)
        await asyncio.wait_for(worker.run(), 30)
        assert seen == [1], seen
        print("handled", seen)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "handled [1]" in done.stdout


async def test_lease_renewals_and_a_fenced_outcome_are_counted(courier: Courier) -> None:
    queue = _queue()
    await courier.queue_create(queue, visibility_timeout=0.3)
    await courier.send(queue, {"n": 1})
    release = asyncio.Event()
    started: list[int] = []

    async def slow(message: Message, ctx: Context) -> None:
        started.append(message.msg_id)
        await release.wait()

    worker = Worker(courier, poll_interval=0.05)
    worker.handle(queue, slow)
    async with worker.running():
        await wait_until(lambda: _value("pgcourier_lease_renewals_total", queue=queue) >= 1)
        # Another client takes the message over: the handler's acknowledgement is fenced.
        async with courier.pool.connection() as conn:
            await conn.execute(
                sql.SQL("UPDATE pgmq.{} SET vt = now() - interval '1 s'").format(
                    sql.Identifier(f"q_{queue}")
                )
            )
            await conn.execute("SELECT * FROM pgmq.read(%s, 60, 1)", [queue])
        release.set()
        await wait_until(lambda: _value("pgcourier_acks_fenced_total", queue=queue) == 1)
    assert (
        started
        and _value("pgcourier_messages_handled_total", queue=queue, type="", outcome="ok") == 1
    )
