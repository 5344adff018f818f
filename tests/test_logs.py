"""Log lines of a message's events: their level, their fields, and JSON that parses."""

from __future__ import annotations

import json
import logging

import pytest

from pgcourier import Context, Courier, Message, Worker
from pgcourier.logs import JsonFormatter, TextFormatter, formatter
from tests.helpers import wait_until


async def _fail_twice(courier: Courier, caplog: pytest.LogCaptureFixture) -> str:
    """Runs a handler that always fails on a queue of two attempts; the message's id."""
    await courier.queue_create("jobs", max_attempts=2, backoff_base=0.01, backoff_max=0.01)
    await courier.send("jobs", {"n": 1}, type="job.run", correlation_id="order-7")
    ids: list[str] = []

    async def handle(message: Message, ctx: Context) -> None:
        ids.append(message.id)
        raise ValueError("card declined")

    caplog.set_level(logging.INFO, logger="pgcourier")
    worker = Worker(courier, poll_interval=0.05)
    worker.handle("jobs", handle)
    async with worker.running():
        await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
    return ids[0]


async def test_a_failing_handler_logs_a_warning_then_its_dead_letter_an_error(
    courier: Courier, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = await _fail_twice(courier, caplog)
    events = [r for r in caplog.records if getattr(r, "message_id", None) == message_id]
    assert [r.levelname for r in events] == ["WARNING", "ERROR"]
    retry, dead = events
    for record, attempt in ((retry, 1), (dead, 2)):
        assert record.queue == "jobs"
        assert record.type == "job.run"
        assert record.correlation_id == "order-7"
        assert record.attempt == attempt
        assert record.error == "ValueError: card declined"
        assert isinstance(record.msg_id, int)
    assert "retrying" in retry.getMessage()
    assert "dead-lettering" in dead.getMessage()


async def test_json_lines_parse_and_carry_the_message_fields(
    courier: Courier, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = await _fail_twice(courier, caplog)
    dead = next(r for r in caplog.records if r.levelno == logging.ERROR)
    line = JsonFormatter(instance="jobs-worker-1").format(dead)
    assert "\n" not in line  # one line per event, traceback included
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["instance"] == "jobs-worker-1"
    assert entry["message_id"] == message_id
    assert entry["queue"] == "jobs"
    assert entry["attempt"] == 2
    assert entry["error"] == "ValueError: card declined"
    assert "ValueError: card declined" in entry["traceback"]


def test_text_lines_put_the_fields_after_the_message() -> None:
    record = logging.makeLogRecord(
        {
            "name": "pgcourier.worker",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "handler failed",
            "queue": "jobs",
            "msg_id": 3,
            "error": "ValueError: no such card",
        }
    )
    line = TextFormatter().format(record)
    assert line.endswith('handler failed queue=jobs msg_id=3 error="ValueError: no such card"')


def test_the_format_is_chosen_by_pgcourier_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_LOG_FORMAT", "json")
    assert isinstance(formatter(), JsonFormatter)
    monkeypatch.delenv("PGCOURIER_LOG_FORMAT")
    assert isinstance(formatter(), TextFormatter)
