"""The orders HTTP API: place an order, read one, list one's own."""

from __future__ import annotations

import functools
import math
import uuid
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcourier import Courier
from services.shared import contracts as c
from services.shared import idempotency
from services.shared.http import (
    Endpoint,
    HTTPError,
    error_response,
    int_query,
    not_found,
    path_uuid,
    principal,
    read_json,
    service_app,
)
from services.shared.metrics import observe
from services.shared.settings import ServiceSettings
from services.shared.sql import query
from services.shared.validation import Field, Schema

from . import saga

LINE = Schema(
    (
        Field("product_id", str, min_length=1, max_length=64),
        Field("quantity", int, minimum=1, maximum=1000),
    )
)
PLACE_ORDER = Schema(
    (
        Field("lines", list, min_length=1, max_length=50, items=LINE),
        Field("card_token", str, min_length=1, max_length=100),
    )
)
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 100
# payments keeps amounts in an integer column; an order it cannot charge is refused here.
MAX_ORDER_TOTAL_CENTS = 2**31 - 1


class _TooManyOpen(Exception):
    """Raised inside the placing transaction, so that it rolls back (the idempotency
    key's claim with it), and answered outside it."""


def _invalid(field: str, message: str) -> HTTPError:
    return HTTPError(422, "validation_error", message, field=field)


def _product_ids(lines: list[dict[str, Any]]) -> list[str]:
    """Canonical product ids, one per line; 422 naming the line for a bad or repeated one."""
    ids: list[str] = []
    for i, line in enumerate(lines):
        field = f"lines[{i}].product_id"
        try:
            product_id = str(uuid.UUID(line["product_id"]))
        except ValueError:
            raise _invalid(field, "must be a uuid") from None
        if product_id in ids:
            raise _invalid(field, "repeats an earlier line's product; combine the quantities")
        ids.append(product_id)
    return ids


async def place_order(request: Request) -> Response:
    body = await read_json(request, PLACE_ORDER)
    lines: list[dict[str, Any]] = body["lines"]
    product_ids = _product_ids(lines)
    customer_id = principal(request).user_id
    settings: ServiceSettings = request.app.state.settings
    courier: Courier = request.app.state.courier
    key = idempotency.RequestKey.of(request, body, caller=customer_id)
    try:
        return await _place(request, courier, key, lines, product_ids, customer_id, body)
    except _TooManyOpen:
        cap: int = request.app.state.max_open_orders
        return error_response(
            429,
            "too_many_open_orders",
            f"you have {cap} orders still being processed; wait for one to be confirmed"
            " or cancelled before placing another",
            # An open order moves on (or is cancelled) within a saga step timeout.
            headers={"Retry-After": str(math.ceil(settings.saga_step_timeout_s))},
        )


async def _place(
    request: Request,
    courier: Courier,
    key: idempotency.RequestKey,
    lines: list[dict[str, Any]],
    product_ids: list[str],
    customer_id: str,
    body: dict[str, Any],
) -> Response:
    settings: ServiceSettings = request.app.state.settings
    # One transaction: the order, its first event, order.placed, the stock timeout
    # and the idempotency key all exist or none does.
    async with courier.pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            return first
        params = {"customer_id": customer_id}
        await conn.execute(query("orders", "customer_lock"), params)
        cur = await conn.execute(query("orders", "order_open_count"), params)
        row = await cur.fetchone()
        if row is not None and row[0] >= request.app.state.max_open_orders:
            raise _TooManyOpen()
        cur = await conn.execute(
            query("orders", "product_select_active"), {"product_ids": product_ids}
        )
        catalogue = {str(pid): (name, price) for pid, name, price in await cur.fetchall()}
        for i, product_id in enumerate(product_ids):
            if product_id not in catalogue:
                raise _invalid(f"lines[{i}].product_id", "is not a product on sale")
        names = [catalogue[pid][0] for pid in product_ids]
        prices = [catalogue[pid][1] for pid in product_ids]
        quantities = [line["quantity"] for line in lines]
        total = sum(p * q for p, q in zip(prices, quantities, strict=True))
        if total > MAX_ORDER_TOTAL_CENTS:
            raise _invalid(
                "lines",
                f"the order's total of {total} cents is over the limit of"
                f" {MAX_ORDER_TOTAL_CENTS} cents; split it into smaller orders",
            )
        cur = await conn.execute(
            query("orders", "order_insert"),
            # Kept only until payment.charge carries it to payments (saga.apply).
            {"customer_id": customer_id, "total_cents": total, "card_token": body["card_token"]},
        )
        row = await cur.fetchone()
        assert row is not None
        order_id = str(row[0])
        await conn.execute(
            query("orders", "order_line_insert"),
            {
                "order_id": order_id,
                "product_ids": product_ids,
                "names": names,
                "quantities": quantities,
                "unit_prices": prices,
            },
        )
        await saga.record_event(
            conn,
            order_id,
            c.ORDER_PLACED,
            saga.PENDING,
            f"order placed: {len(lines)} line(s), {total} cents; reserving stock",
        )
        await courier.publish(
            c.ORDER_PLACED,
            {
                "order_id": order_id,
                "customer_id": customer_id,
                "lines": [
                    {"product_id": pid, "quantity": q}
                    for pid, q in zip(product_ids, quantities, strict=True)
                ],
            },
            conn=conn,
            ordering_key=order_id,
        )
        await saga.schedule_timeout(
            functools.partial(courier.send, conn=conn),
            order_id,
            saga.STEP_STOCK,
            settings.saga_step_timeout_s,
        )
        return await key.answer(conn, {"order_id": order_id, "status": saga.PENDING}, status=202)


def _order_json(row: tuple[Any, ...]) -> dict[str, Any]:
    order_id, customer_id, status, reason, total, created_at, updated_at = row
    return {
        "order_id": str(order_id),
        "customer_id": customer_id,
        "status": status,
        "reason": reason,
        "total_cents": total,
        "created_at": created_at.isoformat(),
        "updated_at": updated_at.isoformat(),
    }


async def get_order(request: Request) -> Response:
    order_id = str(path_uuid(request, "order_id", "order"))
    who = principal(request)
    async with request.app.state.courier.pool.connection() as conn:
        order = await _fetch_one(conn, "order_get", order_id)
        # Someone else's order is not found, so ids cannot be probed.
        if order is None or not (who.is_admin or order[1] == who.user_id):
            raise not_found("order")
        lines = await _fetch_all(conn, "order_line_list", order_id)
        events = await _fetch_all(conn, "order_event_list", order_id)
    result = _order_json(order)
    result["lines"] = [
        {"product_id": str(pid), "name": name, "quantity": q, "unit_price_cents": price}
        for pid, name, q, price in lines
    ]
    result["history"] = [
        {"kind": kind, "status": status, "detail": detail, "at": at.isoformat()}
        for kind, status, detail, at in events
    ]
    return JSONResponse(result)


async def list_orders(request: Request) -> Response:
    limit = int_query(
        request, "limit", default=LIST_LIMIT_DEFAULT, minimum=1, maximum=LIST_LIMIT_MAX
    )
    async with request.app.state.courier.pool.connection() as conn:
        cur = await conn.execute(
            query("orders", "order_list_by_customer"),
            {"customer_id": principal(request).user_id, "limit": limit},
        )
        rows = await cur.fetchall()
    return JSONResponse({"orders": [_order_json(row) for row in rows]})


async def _fetch_one(
    conn: psycopg.AsyncConnection, name: str, order_id: str
) -> tuple[Any, ...] | None:
    cur = await conn.execute(query("orders", name), {"order_id": order_id})
    return await cur.fetchone()


async def _fetch_all(conn: psycopg.AsyncConnection, name: str, order_id: str) -> list[Any]:
    cur = await conn.execute(query("orders", name), {"order_id": order_id})
    return await cur.fetchall()


ENDPOINTS = [
    Endpoint(
        "POST",
        "/orders",
        place_order,
        "Place an order (retry safely with an Idempotency-Key)",
        body=PLACE_ORDER,
        success=202,
        idempotent=True,
    ),
    Endpoint("GET", "/orders", list_orders, "Your orders, newest first (?limit=1..100)"),
    Endpoint("GET", "/orders/{order_id}", get_order, "An order with its lines and history"),
]


def create_app(settings: ServiceSettings) -> Starlette:
    async def startup(courier: Courier) -> None:
        # This process schedules the stock step's timeout: refuse a too-short one.
        await saga.check_step_timeout(courier, settings.saga_step_timeout_s)

    app = observe(service_app(settings, ENDPOINTS, on_startup=startup, consumes=c.ORDERS_INBOX))
    app.state.max_open_orders = settings.max_open_orders
    return app
