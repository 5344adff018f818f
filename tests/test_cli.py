"""`python -m pgcourier`, run as a subprocess against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import scalar, wait_until

_DB_VARS = ("DATABASE_URL", "PGCOURIER_DATABASE_URL")


def run_cli(
    *args: str, database_url: str | None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _DB_VARS}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "pgcourier", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def add_dead_letter(database_url: str, queue: str, payload: object, error: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "INSERT INTO pgcourier.dead_letter"
            " (queue_name, msg_id, message, headers, enqueued_at, attempts, errors)"
            ' VALUES (%s, 7, %s, \'{"type": "order.placed"}\', now(), 2, %s)'
            " RETURNING dead_letter_id",
            [
                queue,
                json.dumps(payload),
                json.dumps([{"attempt": 1, "error": "first"}, {"attempt": 2, "error": error}]),
            ],
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_queues_prints_an_aligned_table_and_json_of_the_counts(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.queue_create("emails")
    await courier.send_batch("orders", [1, 2, 3])
    await courier.send("orders", 4, delay=60)
    add_dead_letter(database_url, "orders", {"n": 1}, "boom")

    table = run_cli("queues", database_url=database_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "QUEUE",
        "READY",
        "IN_FLIGHT",
        "DELAYED",
        "DEAD",
        "OLDEST_READY_AGE_S",
    ]
    assert lines[1].split() == ["emails", "0", "0", "0", "0", "-"]
    assert lines[2].split()[:5] == ["orders", "3", "0", "1", "1"]
    # Aligned: every column ends where its header does.
    assert len({len(line) for line in lines[:2]}) == 1

    as_json = run_cli("queues", "--json", database_url=database_url)
    assert as_json.returncode == 0, as_json.stderr
    rows = {r["queue"]: r for r in json.loads(as_json.stdout)}
    assert rows["orders"]["ready"] == 3 and rows["orders"]["delayed"] == 1
    assert rows["orders"]["dead"] == 1 and rows["orders"]["in_flight"] == 0
    assert rows["emails"]["oldest_ready_age_s"] is None


async def test_peek_lists_messages_and_leaves_them_unclaimed(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.send("orders", {"sku": "a-1"}, type="order.placed")
    await courier.send("orders", {"sku": "b-2"})

    table = run_cli("peek", "orders", "-n", "1", database_url=database_url)
    assert table.returncode == 0, table.stderr
    assert "order.placed" in table.stdout and '{"sku":"a-1"}' in table.stdout
    assert "b-2" not in table.stdout

    as_json = run_cli("peek", "orders", "--json", database_url=database_url)
    assert as_json.returncode == 0, as_json.stderr
    messages = json.loads(as_json.stdout)
    assert [m["payload"] for m in messages] == [{"sku": "a-1"}, {"sku": "b-2"}]
    with psycopg.connect(database_url) as conn:
        read_cts = conn.execute("SELECT read_ct FROM pgmq.q_orders").fetchall()
    assert read_cts == [(0,), (0,)]


async def test_dead_shows_last_error_and_attempts(courier: Courier, database_url: str) -> None:
    await courier.queue_create("orders")
    dl_id = add_dead_letter(database_url, "orders", {"n": 1}, "ValueError: bad sku")

    table = run_cli("dead", "orders", database_url=database_url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "MSG_ID", "TYPE", "ATTEMPTS", "DEAD_AT", "LAST_ERROR"]
    assert row.split()[:4] == [str(dl_id), "7", "order.placed", "2"]
    assert row.endswith("ValueError: bad sku")

    as_json = run_cli("dead", "orders", "--json", database_url=database_url)
    (letter,) = json.loads(as_json.stdout)
    assert letter["last_error"] == "ValueError: bad sku" and letter["attempts"] == 2


async def test_retry_dead_moves_dead_letters_back_to_the_queue(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("orders")
    first = add_dead_letter(database_url, "orders", {"n": 1}, "boom")
    add_dead_letter(database_url, "orders", {"n": 2}, "boom")

    one = run_cli("retry-dead", "orders", "--id", str(first), database_url=database_url)
    assert one.returncode == 0, one.stderr
    assert "requeued 1 dead letter" in one.stdout

    rest = run_cli("retry-dead", "orders", database_url=database_url)
    assert rest.returncode == 0, rest.stderr
    assert "requeued 1 dead letter" in rest.stdout
    with psycopg.connect(database_url) as conn:
        queued = conn.execute("SELECT message FROM pgmq.q_orders ORDER BY msg_id").fetchall()
        dead = conn.execute("SELECT count(*) FROM pgcourier.dead_letter").fetchone()
    assert queued == [({"n": 1},), ({"n": 2},)]
    assert dead == (0,)


async def test_purge_refuses_without_yes_and_empties_the_queue_with_it(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("orders")
    await courier.send_batch("orders", [1, 2, 3])

    refused = run_cli("purge", "orders", database_url=database_url)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr and "orders" in refused.stderr
    assert_no_traceback(refused)
    assert len(await _peek_all(courier)) == 3

    purged = run_cli("purge", "orders", "--yes", database_url=database_url)
    assert purged.returncode == 0, purged.stderr
    assert "deleted 3 messages" in purged.stdout
    assert await _peek_all(courier) == []


async def _peek_all(courier: Courier) -> list[object]:
    from pgcourier.admin import Admin

    return list(await Admin(courier).peek("orders", limit=100))


async def test_create_makes_a_queue_and_keeps_settings_not_given(
    courier: Courier, database_url: str
) -> None:
    created = run_cli(
        "create",
        "orders",
        "--visibility-timeout",
        "90",
        "--max-attempts",
        "3",
        "--archive",
        database_url=database_url,
    )
    assert created.returncode == 0, created.stderr
    assert "created queue 'orders'" in created.stdout
    settings = await courier.queue_settings("orders")
    assert (settings.visibility_timeout_s, settings.max_attempts, settings.archive) == (90, 3, True)

    updated = run_cli("create", "orders", "--max-attempts", "7", database_url=database_url)
    assert updated.returncode == 0, updated.stderr
    assert "updated queue 'orders'" in updated.stdout
    settings = await courier.queue_settings("orders")
    assert (settings.visibility_timeout_s, settings.max_attempts, settings.archive) == (90, 7, True)


@pytest.mark.parametrize(
    "command", [["peek", "nope"], ["dead", "nope"], ["retry-dead", "nope"], ["purge", "nope"]]
)
def test_unknown_queue_exits_1_with_a_message_naming_it(
    database_url: str, command: list[str]
) -> None:
    result = run_cli(*command, database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "'nope'" in result.stderr
    assert "does not exist" in result.stderr
    assert_no_traceback(result)


def test_invalid_queue_name_exits_1_without_a_traceback(database_url: str) -> None:
    result = run_cli("peek", "Bad-Name", database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid queue name 'Bad-Name'")
    assert_no_traceback(result)


def test_missing_database_url_exits_2_saying_how_to_set_it(tmp_path: Path) -> None:
    result = run_cli("queues", database_url=None, cwd=tmp_path)
    assert result.returncode == 2
    assert "--database-url" in result.stderr and "DATABASE_URL" in result.stderr
    assert_no_traceback(result)


def test_database_url_option_takes_precedence_over_the_environment(database_url: str) -> None:
    result = run_cli(
        "queues", "--database-url", database_url, database_url="host=/nonexistent dbname=x"
    )
    assert result.returncode == 0, result.stderr


def test_unreachable_database_is_an_error_not_a_traceback() -> None:
    result = run_cli("queues", database_url="host=127.0.0.1 port=1 dbname=x connect_timeout=5")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot connect to the database")
    assert_no_traceback(result)


def test_migrate_installs_the_schema_the_other_commands_need(empty_database_url: str) -> None:
    for command in (["queues"], ["peek", "orders"], ["create", "orders"]):
        before = run_cli(*command, database_url=empty_database_url)
        assert before.returncode == 1
        assert "run `pgcourier migrate`" in before.stderr, before.stderr
        assert_no_traceback(before)

    migrated = run_cli("migrate", database_url=empty_database_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied pgcourier/0001_queue_settings" in migrated.stdout

    again = run_cli("migrate", database_url=empty_database_url)
    assert again.stdout.strip() == "schema is up to date"
    after = run_cli("queues", database_url=empty_database_url)
    assert after.returncode == 0, after.stderr
    assert after.stdout.startswith("no queues")


async def test_workers_lists_live_workers_with_their_queues(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("jobs")
    worker = Worker(courier, poll_interval=0.05, name="jobs-worker-7")

    async def handle(message: Message, ctx: Context) -> None:
        pass

    worker.handle("jobs", handle)
    async with worker.running():
        await wait_until(lambda: scalar(courier, "SELECT count(*) FROM pgcourier.worker"))
        result = await asyncio.to_thread(run_cli, "workers", "--json", database_url=database_url)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["name"] == "jobs-worker-7" and row["queues"] == ["jobs"] and row["alive"]
