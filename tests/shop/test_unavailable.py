"""While the database is unreachable every request is answered 503 with Retry-After,
never 500: a refused connection, a pool that cannot hand one out in time, a backend
killed mid-transaction (seen bare or wrapped by pgcourier)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.orders.app import create_app
from services.shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.shop.conftest import serve_app, token_for

ALICE = "user-alice"
PEN = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0a01"
ORDER = {"lines": [{"product_id": PEN, "quantity": 1}], "card_token": "tok_visa"}


class CuttableProxy:
    """A TCP port in front of Postgres that can be cut: every connection dropped and
    nothing listening any more (connections refused), as when the server is down."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        await self.server.wait_closed()
        self.links.clear()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = str(self.target.get("host") or "/tmp"), int(self.target.get("port") or 5432)
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open_target()
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


@pytest.fixture
async def proxy(shop_url: str) -> AsyncIterator[CuttableProxy]:
    p = CuttableProxy(conninfo_to_dict(shop_url))
    await p.up()
    try:
        yield p
    finally:
        if p.server is not None:
            p.server.close()
        for writer in list(p.links):
            writer.transport.abort()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": "unavailable",
        "message": "the database is unavailable; retry shortly",
    }


async def test_requests_while_the_database_is_down_get_503_with_retry_after_then_recover(
    proxy: CuttableProxy, settings_for: Callable[[str], ServiceSettings]
) -> None:
    direct = settings_for("orders")
    via_proxy = make_conninfo(direct.database_url, host="127.0.0.1", port=proxy.port)
    settings = dataclasses.replace(direct, database_url=via_proxy, db_timeout_s=0.5)
    async with serve_app(create_app(settings)) as client:
        assert (await client.get("/orders", headers=token_for(ALICE))).status_code == 200
        await proxy.cut()
        # The pooled connection is dead (server closed the connection), then no new
        # one can be made (connection refused) and the checkout times out: all 503.
        for _ in range(3):
            assert_unavailable(await client.get("/orders", headers=token_for(ALICE)))
            assert_unavailable(await client.post("/orders", json=ORDER, headers=token_for(ALICE)))
        await proxy.up()

        async def back() -> bool:
            response = await client.get("/orders", headers=token_for(ALICE))
            return response.status_code == 200

        await wait_until(back, within=15, interval=0.2)


async def _backend_waiting_on_a_lock(admin: psycopg.AsyncConnection, role: str) -> int | None:
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND usename = %s AND wait_event_type = 'Lock'",
        [role],
    )
    row = await cur.fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(
    ("locked", "where"),
    [
        # The order's own insert: psycopg's error, raised inside the transaction.
        (("orders", "order"), "bare driver error"),
        # order.placed, sent by pgcourier on the same connection: its DatabaseError,
        # with the driver's error as __cause__.
        (("pgmq", "q_products_inbox"), "wrapped by pgcourier"),
    ],
)
async def test_a_backend_terminated_mid_transaction_is_503_and_creates_nothing(
    shop_url: str,
    settings_for: Callable[[str], ServiceSettings],
    locked: tuple[str, str],
    where: str,
) -> None:
    settings = settings_for("orders")
    async with serve_app(create_app(settings)) as client:
        admin = await psycopg.AsyncConnection.connect(shop_url, autocommit=True)
        async with admin:
            await admin.execute(
                "INSERT INTO orders.product VALUES (%s, 'Pen', 250, true, now())", [PEN]
            )
            blocker = await psycopg.AsyncConnection.connect(shop_url)
            async with blocker:
                await blocker.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                        sql.Identifier(*locked)
                    )
                )
                request = asyncio.create_task(
                    client.post("/orders", json=ORDER, headers=token_for(ALICE))
                )
                pid = await wait_until_value(
                    lambda: _backend_waiting_on_a_lock(admin, "orders_svc")
                )
                await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
                response = await request
                await blocker.rollback()
            assert_unavailable(response)
            cur = await admin.execute('SELECT count(*) FROM orders."order"')
            assert await cur.fetchone() == (0,), where
        # The pool replaces the dead connection: the retry goes through.
        retry = await client.post("/orders", json=ORDER, headers=token_for(ALICE))
        assert retry.status_code == 202, retry.text


async def wait_until_value(probe: Callable[[], Any], within: float = 10) -> Any:
    """The first value probe() gives that is not None."""

    async def found() -> tuple[Any] | None:
        value = await probe()
        return None if value is None else (value,)

    return (await wait_until(found, within=within, interval=0.02))[0]
