"""The console's HTTP routes, without a browser: what anyone may read, and what only an
operator's session with its CSRF token may change."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pgcourier import Context, Courier, Message, Worker
from pgcourier.console import Console
from tests.helpers import scalar, wait_until

TOKEN = "operator-secret-token"
BASE = "http://console.test"


@contextlib.asynccontextmanager
async def console_client(
    database_url: str, *, token: str | None = TOKEN, **options: Any
) -> AsyncIterator[tuple[Console, httpx.AsyncClient]]:
    options.setdefault("sample_interval_s", 0.05)
    console = Console({"main": database_url}, token=token, **options)
    app = console.app()
    async with console.lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield console, client


async def log_in(client: httpx.AsyncClient, token: str = TOKEN) -> str:
    """Logs the client in; returns the session's CSRF token (from a page's form)."""
    response = await client.post("/login", data={"token": token, "next": "/"})
    assert response.status_code == 303
    page = await client.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "an operator's page carries the CSRF token"
    return found.group(1)


async def dead_letter_count(courier: Courier, queue: str) -> int:
    return await scalar(
        courier, "SELECT count(*) FROM pgcourier.dead_letter WHERE queue_name = %s", [queue]
    )


async def make_dead_letter(courier: Courier, queue: str, payload: Any) -> None:
    """A message that fails its only attempt, so it is dead-lettered by a real worker."""
    await courier.queue_create(queue, max_attempts=1)

    async def fail(message: Message, ctx: Context) -> None:
        raise ValueError(f"cannot handle {message.payload!r}")

    worker = Worker(courier, poll_interval=0.05, heartbeat_interval=0.5)
    worker.handle(queue, fail)
    await courier.send(queue, payload, correlation_id="dead-corr")
    async with worker.running():
        await wait_until(lambda: dead_letter_count(courier, queue))


async def send_chain(courier: Courier, correlation_id: str) -> None:
    """A three-step chain sharing a correlation id: console_a (archived) hands on to
    console_b (archived), which hands on to console_c, whose handler fails for good.
    Leaves archive rows, inbox records and a dead letter behind."""
    await courier.queue_create("console_a", archive=True)
    await courier.queue_create("console_b", archive=True)
    await courier.queue_create("console_c", max_attempts=1)
    worker = Worker(courier, poll_interval=0.05, heartbeat_interval=0.5)

    async def reserve(message: Message, ctx: Context) -> None:
        await ctx.send("console_b", {**message.payload, "step": "charge"}, type="charge")

    async def charge(message: Message, ctx: Context) -> None:
        await ctx.send("console_c", {**message.payload, "step": "ship"}, type="ship")

    async def ship(message: Message, ctx: Context) -> None:
        raise RuntimeError("carrier unreachable")

    worker.handle("console_a", reserve, transactional=True)
    worker.handle("console_b", charge, transactional=True)
    worker.handle("console_c", ship)
    await courier.send(
        "console_a", {"order": correlation_id}, type="reserve", correlation_id=correlation_id
    )
    async with worker.running():
        await wait_until(lambda: dead_letter_count(courier, "console_c"), within=20)


async def test_queues_api_shows_a_message_sent_while_the_console_runs(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("console_live")
    async with console_client(database_url) as (_, client):
        await courier.send("console_live", {"n": 1})
        await courier.send("console_live", {"n": 2}, delay=3600)

        async def shown() -> dict[str, Any] | None:
            data = (await client.get("/api/queues")).json()
            rows = {q["queue"]: q for q in data["databases"][0]["queues"]}
            row = rows.get("console_live")
            # Both sends counted: a sample may have been taken between them.
            return row if row and row["ready"] + row["delayed"] == 2 else None

        row = await wait_until(shown)
        assert row["ready"] == 1 and row["delayed"] == 1 and row["dead"] == 0


async def test_throughput_counts_messages_sent_and_handled_between_samples(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("console_rate")
    async with console_client(database_url, sample_interval_s=3600, history_s=36000) as (
        console,
        _,
    ):
        db = console.databases["main"]
        # The console's own first sample, taken as it starts, before ours: one taken
        # between two of ours (the machine loaded) would split the intervals.
        await wait_until(lambda: db.latest() is not None, within=10)
        await db.sample()
        for n in range(4):
            await courier.send("console_rate", {"n": n})
        await db.sample()
        async with courier.pool.connection() as conn:
            await conn.execute("DELETE FROM pgmq.q_console_rate WHERE msg_id <= 3")
        await db.sample()
    (_, sent_1, left_1), (_, sent_2, left_2) = db.rates()["console_rate"][-2:]
    assert sent_1 > 0 and left_1 == 0, "four sent, none handled yet"
    assert sent_2 == 0 and left_2 > 0, "none sent, three gone"


async def test_without_a_session_dead_letters_are_shown_but_cannot_be_retried(
    courier: Courier, database_url: str
) -> None:
    await make_dead_letter(courier, "console_dead", {"sku": "x"})
    async with console_client(database_url) as (_, client):
        page = await client.get("/db/main/queue/console_dead/dead")
        assert page.status_code == 200
        assert "ValueError: cannot handle {&#x27;sku&#x27;: &#x27;x&#x27;}" in page.text
        assert "attempt 1" in page.text
        assert 'id="retry-all"' not in page.text and "log in as operator" in page.text
        refused = await client.post(
            "/db/main/queue/console_dead/dead/retry", data={"scope": "all", "csrf": "x"}
        )
        assert refused.status_code == 403
    assert await dead_letter_count(courier, "console_dead") == 1


async def test_a_retry_needs_the_sessions_csrf_token_and_the_consoles_origin(
    courier: Courier, database_url: str
) -> None:
    await make_dead_letter(courier, "console_dead", {"sku": "y"})
    url = "/db/main/queue/console_dead/dead/retry"
    async with console_client(database_url) as (_, client):
        csrf = await log_in(client)
        assert (await client.post(url, data={"scope": "all"})).status_code == 403
        # Change the last character to one it is not, so the token is always wrong.
        altered = csrf[:-1] + ("B" if csrf.endswith("A") else "A")
        wrong = await client.post(url, data={"scope": "all", "csrf": altered})
        assert wrong.status_code == 403
        elsewhere = await client.post(
            url, data={"scope": "all", "csrf": csrf}, headers={"origin": "http://evil.test"}
        )
        assert elsewhere.status_code == 403
        assert await dead_letter_count(courier, "console_dead") == 1
        done = await client.post(url, data={"scope": "all", "csrf": csrf}, headers={"origin": BASE})
        assert (
            done.status_code == 303 and "requeued%201%20dead%20letter" in done.headers["location"]
        )
    assert await dead_letter_count(courier, "console_dead") == 0
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_console_dead") == 1


async def test_a_wrong_token_opens_no_session(courier: Courier, database_url: str) -> None:
    async with console_client(database_url) as (_, client):
        response = await client.post("/login", data={"token": "guess", "next": "/"})
        assert response.status_code == 403
        assert "pgcourier_console" not in response.cookies
        assert 'name="csrf"' not in (await client.get("/")).text


async def test_the_session_cookie_is_http_only_and_same_site_strict(database_url: str) -> None:
    async with console_client(database_url) as (_, client):
        response = await client.post("/login", data={"token": TOKEN, "next": "//evil.test/"})
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert response.headers["location"] == "/", "no redirect to another site"


async def test_without_a_configured_token_nobody_can_log_in(database_url: str) -> None:
    async with console_client(database_url, token=None) as (_, client):
        response = await client.post("/login", data={"token": "", "next": "/"})
        assert response.status_code == 403


async def test_a_purge_asks_for_confirmation_before_deleting(
    courier: Courier, database_url: str
) -> None:
    await make_dead_letter(courier, "console_dead", {"sku": "z"})
    url = "/db/main/queue/console_dead/dead/purge"
    async with console_client(database_url) as (_, client):
        csrf = await log_in(client)
        asked = await client.post(url, data={"scope": "all", "csrf": csrf})
        assert asked.status_code == 200 and "deletes 1 dead letter of" in asked.text
        assert await dead_letter_count(courier, "console_dead") == 1
        mistyped = await client.post(
            url, data={"scope": "all", "csrf": csrf, "confirm": "console_deaf"}
        )
        assert mistyped.status_code == 200
        assert await dead_letter_count(courier, "console_dead") == 1
        unsigned = await client.post(url, data={"scope": "all", "confirm": "console_dead"})
        assert unsigned.status_code == 403
        done = await client.post(
            url, data={"scope": "all", "csrf": csrf, "confirm": "console_dead"}
        )
        assert done.status_code == 303
    assert await dead_letter_count(courier, "console_dead") == 0
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_console_dead") == 0


async def test_a_message_can_be_peeked_with_its_headers_and_payload(
    courier: Courier, database_url: str
) -> None:
    await courier.queue_create("console_peek")
    msg_id = await courier.send(
        "console_peek", {"<b>": "escaped"}, type="note", correlation_id="c-1"
    )
    async with console_client(database_url) as (_, client):
        listing = await client.get("/db/main/queue/console_peek")
        assert f"/db/main/queue/console_peek/message/{msg_id}" in listing.text
        page = await client.get(f"/db/main/queue/console_peek/message/{msg_id}")
        assert page.status_code == 200
        assert "&lt;b&gt;" in page.text and "<b>" not in page.text
        assert '"type": "note"' in page.text.replace("&quot;", '"')
        assert 'href="/correlation/c-1"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        missing = await client.get("/db/main/queue/no_such_queue")
        assert missing.status_code == 404


async def test_a_correlation_id_is_followed_through_queues_archives_inboxes_and_dead_letters(
    courier: Courier, database_url: str
) -> None:
    await send_chain(courier, "order-42")
    async with console_client(database_url) as (_, client):
        page = await client.get("/correlation", params={"id": "order-42"}, follow_redirects=True)
    text = page.text
    places = re.findall(
        r'<tr class="place-([a-z-]+)"><td>[^<]*</td><td>main</td><td>(?:<a[^>]*>)?(\w+)', text
    )
    assert ("archive", "console_a") in places and ("archive", "console_b") in places
    assert ("inbox", "console_a") in places and ("inbox", "console_b") in places
    assert ("dead-letter", "console_c") in places
    assert "RuntimeError: carrier unreachable" in text, "a dead letter shows its last error"
    assert text.index("reserve") < text.index("charge") < text.index("ship")


def test_the_library_imports_without_the_console_extra() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "import pgcourier, pgcourier.cli\n"
        "assert pgcourier.cli.main(['console', '--database', 'x=postgresql://']) == 1\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pip install 'pgcourier[console]'" in result.stderr


@pytest.mark.parametrize("given", ["noequals", "=postgresql://", "name="])
def test_console_refuses_a_malformed_database(given: str) -> None:
    from pgcourier.cli import main

    assert main(["console", "--database", given]) == 2
