"""The console in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium against the console served by uvicorn.

Skipped, with a notice at the end of the run (tests/conftest.py), when no Chromium
is installed. Each page's screenshot is saved under test-output/console/.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgcourier import Context, Courier, Message, Worker
from pgcourier.console import Console
from tests.helpers import scalar, wait_until
from tests.test_console_http import TOKEN, dead_letter_count, make_dead_letter, send_chain

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
BROWSER_MISSING = "no Chromium: apt-get install chromium chromium-driver"

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason=BROWSER_MISSING)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(databases: dict[str, str], *, port: int | None = None) -> Iterator[str]:
    """The console on 127.0.0.1, in a thread with its own event loop."""
    import uvicorn

    app = Console(databases, token=TOKEN, sample_interval_s=0.2).app()
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextlib.asynccontextmanager
async def served(database_url: str) -> AsyncIterator[str]:
    with serving({"main": database_url}) as base:
        yield base


async def in_browser(action: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks: off the event loop, so the test's workers keep running."""
    return await asyncio.to_thread(action, *args)


async def seen(driver: Any, css: str, text: str | None = None, *, within: float = 15) -> Any:
    """Waits for an element (with the text, if given) and returns it. The queues page
    redraws its rows on every poll, so an element found may be replaced meanwhile:
    such a one is looked for again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def find() -> Any:
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            try:
                if text is None or text in element.text:
                    return element
            except StaleElementReferenceException:
                continue
        return None

    found: list[Any] = []

    async def present() -> bool:
        element = await in_browser(find)
        if element is not None:
            found.append(element)
        return element is not None

    await wait_until(present, within=within, interval=0.1)
    return found[-1]


async def seen_text(driver: Any, css: str, text: str) -> str:
    """The text of a live element once it holds `text` (read in the same look)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def read() -> str | None:
        try:
            return next(
                (e.text for e in driver.find_elements(By.CSS_SELECTOR, css) if text in e.text),
                None,
            )
        except StaleElementReferenceException:
            return None

    texts: list[str] = []

    async def holds() -> bool:
        value = await in_browser(read)
        if value is not None:
            texts.append(value)
        return value is not None

    await wait_until(holds, within=15, interval=0.1)
    return texts[-1]


async def click(driver: Any, css: str) -> None:
    """Clicks an element of the live page, looking it up again if it was redrawn."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            await in_browser((await seen(driver, css)).click)
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being redrawn before it could be clicked")


async def shot(driver: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    await in_browser(driver.save_screenshot, str(path))
    return path


async def log_in(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    await in_browser(driver.get, f"{base}/login")
    field = await seen(driver, "#token")
    await shot(driver, "login")
    await in_browser(field.send_keys, TOKEN)
    await in_browser(driver.find_element(By.ID, "login").click)
    await seen(driver, ".badge.op")


async def test_the_queues_page_shows_a_message_sent_during_the_test(
    browser: Any, courier: Courier, database_url: str
) -> None:
    from selenium.webdriver.common.by import By

    for name in ("orders_inbox", "payments_inbox", "products_inbox"):
        await courier.queue_create(name)
    async with served(database_url) as base:
        await in_browser(browser.get, base)
        await seen(browser, 'tr[data-queue="orders_inbox"] td.ready', "0")
        await courier.send_batch("orders_inbox", [{"n": n} for n in range(3)])
        await courier.send("payments_inbox", {"n": 1}, delay=600)
        ready = await seen_text(browser, 'tr[data-queue="orders_inbox"] td.ready', "3")
        assert ready == "3"
        delayed = await seen_text(browser, 'tr[data-queue="payments_inbox"] td.delayed', "1")
        assert delayed == "1"
        await seen(browser, 'tr[data-queue="orders_inbox"] svg.chart polyline.sent')
        assert "pgcourier console" in browser.title
        await shot(browser, "queues")
        await click(browser, 'a[href="/db/main/queue/orders_inbox"]')
        peeked = await seen(browser, "main table tbody")
        assert len(await in_browser(peeked.find_elements, By.TAG_NAME, "tr")) == 3
        await shot(browser, "queue")


async def test_a_dead_letter_retried_from_the_page_is_then_handled(
    browser: Any, courier: Courier, database_url: str
) -> None:
    from selenium.webdriver.common.by import By

    await make_dead_letter(courier, "console_dead", {"sku": "late"})
    handled: list[Any] = []

    async def accept(message: Message, ctx: Context) -> None:
        handled.append(message.payload)

    worker = Worker(courier, poll_interval=0.05, heartbeat_interval=0.5)
    worker.handle("console_dead", accept)
    async with served(database_url) as base, worker.running():
        await in_browser(browser.get, f"{base}/db/main/queue/console_dead/dead")
        await seen(browser, "ol.errors", "ValueError: cannot handle")
        assert not await in_browser(browser.find_elements, By.ID, "retry-selected")
        await log_in(browser, base)
        await in_browser(browser.get, f"{base}/db/main/queue/console_dead/dead")
        box = await seen(browser, 'input[type="checkbox"][name="id"]')
        await in_browser(box.click)
        await shot(browser, "dead-letters")
        await in_browser(browser.find_element(By.ID, "retry-selected").click)
        note = await seen(browser, "#note", "requeued 1 dead letter")
        assert "requeued 1 dead letter" in note.text
        await wait_until(lambda: handled, within=15)
    assert handled == [{"sku": "late"}]
    assert await dead_letter_count(courier, "console_dead") == 0
    assert await scalar(courier, "SELECT count(*) FROM pgmq.q_console_dead") == 0


async def test_a_purge_from_the_page_asks_before_deleting(
    browser: Any, courier: Courier, database_url: str
) -> None:
    from selenium.webdriver.common.by import By

    await make_dead_letter(courier, "console_dead", {"sku": "gone"})
    async with served(database_url) as base:
        await log_in(browser, base)
        await in_browser(browser.get, f"{base}/db/main/queue/console_dead/dead")
        await in_browser((await seen(browser, "#purge-all")).click)
        confirm = await seen(browser, "#confirm")
        await shot(browser, "purge-confirmation")
        assert await dead_letter_count(courier, "console_dead") == 1
        await in_browser(confirm.send_keys, "console_dead")
        await in_browser(browser.find_element(By.ID, "purge-confirm").click)
        await seen(browser, "#note", "deleted 1 dead letter")
    assert await dead_letter_count(courier, "console_dead") == 0


async def test_the_correlation_view_shows_every_step_of_a_chain(
    browser: Any, courier: Courier, database_url: str
) -> None:
    from selenium.webdriver.common.by import By

    await send_chain(courier, "order-0042")
    async with served(database_url) as base:
        await in_browser(browser.get, base)
        search = await seen(browser, "#correlation-search")
        await in_browser(search.send_keys, "order-0042")
        await in_browser(search.submit)
        table = await seen(browser, "table.correlation")
        rows = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")[2:6]]
            for row in await in_browser(table.find_elements, By.CSS_SELECTOR, "tbody tr")
        ]
        await shot(browser, "correlation")
        assert ["console_a", "archive", rows[0][2], "reserve"] == rows[0]
        places = {(queue, place, kind) for queue, place, _, kind in rows}
        assert {
            ("console_a", "archive", "reserve"),
            ("console_a", "inbox", "-"),
            ("console_b", "archive", "charge"),
            ("console_b", "inbox", "-"),
            ("console_c", "dead letter", "ship"),
        } <= places
        link = await in_browser(browser.find_element, By.LINK_TEXT, "console_b")
        await in_browser(link.click)
        payload = await seen(browser, "#payload", "charge")
        assert '"order": "order-0042"' in payload.text
        await shot(browser, "message")


def test_the_correlation_view_shows_an_orders_whole_saga_across_the_shops_databases(
    browser: Any, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shop as runner.py starts it (a database per service, linked), with the
    console over the four databases: an order placed over HTTP links to its saga."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from runner import keep_history
    from tests.shop.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, made_shop_databases
    from tests.shop.test_e2e import (
        auth,
        create_product,
        started_shop,
        wait_all_final,
        wait_known_to_orders,
    )

    port = free_port()
    monkeypatch.setenv("SHOP_CONSOLE_URL", f"http://127.0.0.1:{port}")  # the children inherit it
    with made_shop_databases(server_url, "databases") as databases:
        asyncio.run(keep_history(databases, retention_s=600))
        named = {service: databases.url(service) for service in databases.urls}
        with started_shop(databases, tmp_path) as shop, serving(named, port=port):
            product_id = create_product(shop, shop.login(ADMIN_EMAIL, ADMIN_PASSWORD), stock=3)
            wait_known_to_orders(shop, product_id)
            customer = shop.customer()
            with httpx.Client(timeout=30) as http:
                placed = http.post(
                    f"{shop.urls['orders']}/orders",
                    json={"lines": [{"product_id": product_id, "quantity": 1}], "card_token": "t"},
                    headers={**auth(customer), "Idempotency-Key": str(uuid.uuid4())},
                )
                assert placed.status_code == 202, placed.text
                order_id = placed.json()["order_id"]
                assert wait_all_final(shop, customer, [order_id])[order_id]["status"] == "confirmed"
                order = http.get(f"{shop.urls['orders']}/orders/{order_id}", headers=auth(customer))
            link = order.headers["link"]
            assert link == f'<http://127.0.0.1:{port}/correlation/{order_id}>; rel="related"'

            browser.get(link[1 : link.index(">")])
            WebDriverWait(browser, 15).until(
                lambda b: "payment.captured" in b.find_element(By.TAG_NAME, "main").text
            )
            rows = [
                [cell.text for cell in row.find_elements(By.TAG_NAME, "td")[1:6]]
                for row in browser.find_elements(By.CSS_SELECTOR, "table.correlation tbody tr")
            ]
            browser.save_screenshot(str(SHOTS / "saga.png"))
    steps = {(db, queue, place, kind) for db, queue, place, _, kind in rows}
    assert {
        ("products", "products_inbox", "archive", "order.placed"),
        ("orders", "orders_inbox", "archive", "stock.reserved"),
        ("payments", "payments_inbox", "archive", "payment.charge"),
        ("orders", "orders_inbox", "archive", "payment.captured"),
    } <= steps
    handled_in = {db for db, _, place, _, _ in rows if place == "inbox"}
    assert handled_in == {"orders", "products", "payments"}
