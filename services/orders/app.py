"""The orders HTTP API: place an order, read one, list one's own."""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from pgcourier import Courier
from services.shared import contracts as c
from services.shared import idempotency
from services.shared.errors import FieldError
from services.shared.http import (
    Endpoint,
    HTTPError,
    error_response,
    json_response,
    not_found,
    path_uuid,
    principal,
    read_json,
    read_query,
    service_app,
)
from services.shared.metrics import observe
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from . import saga
from .models import NewLine, NewOrder, OrderAccepted, OrderDetail, OrderPage, Orders

# payments keeps amounts in an integer column; an order it cannot charge is refused here.
MAX_ORDER_TOTAL_CENTS = 2**31 - 1


class _TooManyOpen(Exception):
    """Raised inside the placing transaction, so that it rolls back (the idempotency
    key's claim with it), and answered outside it."""


def _invalid(field: str, message: str) -> HTTPError:
    return HTTPError(422, "validation_error", message, field=field)


def _product_ids(lines: list[NewLine]) -> list[str]:
    """Canonical product ids, one per line; 422 naming every line that repeats one."""
    ids = [str(line.product_id) for line in lines]
    repeats = [
        FieldError(
            f"lines[{i}].product_id", "repeats an earlier line's product; combine the quantities"
        )
        for i, product_id in enumerate(ids)
        if product_id in ids[:i]
    ]
    if repeats:
        raise HTTPError.invalid(repeats)
    return ids


def _located(response: Response, order_id: str) -> Response:
    """The answer with Location naming the order, where GET reads it."""
    response.headers["Location"] = f"/orders/{order_id}"
    return response


async def place_order(request: Request) -> Response:
    body = await read_json(request, NewOrder)
    product_ids = _product_ids(body.lines)
    customer_id = principal(request).user_id
    settings: ServiceSettings = request.app.state.settings
    courier: Courier = request.app.state.courier
    key = idempotency.RequestKey.of(request, body, caller=customer_id)
    try:
        return await _place(request, courier, key, body, product_ids, customer_id)
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
    body: NewOrder,
    product_ids: list[str],
    customer_id: str,
) -> Response:
    settings: ServiceSettings = request.app.state.settings
    # One transaction: the order (with its stock step's deadline), its first event,
    # order.placed and the idempotency key all exist or none does.
    async with courier.pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            # Only an accepted order's answer is kept, so it names the order.
            return _located(first, json.loads(bytes(first.body))["order_id"])
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
        absent = [
            FieldError(f"lines[{i}].product_id", "is not a product on sale")
            for i, product_id in enumerate(product_ids)
            if product_id not in catalogue
        ]
        if absent:
            raise HTTPError.invalid(absent)
        names = [catalogue[pid][0] for pid in product_ids]
        prices = [catalogue[pid][1] for pid in product_ids]
        quantities = [line.quantity for line in body.lines]
        total = sum(p * q for p, q in zip(prices, quantities, strict=True))
        if total > MAX_ORDER_TOTAL_CENTS:
            raise _invalid(
                "lines",
                f"the order's total of {total} cents is over the limit of"
                f" {MAX_ORDER_TOTAL_CENTS} cents; split it into smaller orders",
            )
        cur = await conn.execute(
            query("orders", "order_place"),
            {
                "customer_id": customer_id,
                "total_cents": total,
                # Kept only until payment.charge carries it to payments (saga.apply).
                "card_token": body.card_token,
                # The stock step's deadline (deadlines.py times the order out then).
                "step_timeout_s": settings.saga_step_timeout_s,
                "product_ids": product_ids,
                "names": names,
                "quantities": quantities,
                "unit_prices": prices,
                "kind": c.ORDER_PLACED,
                "status": saga.PENDING,
                "detail": f"order placed: {len(body.lines)} line(s), {total} cents;"
                " reserving stock",
            },
        )
        row = await cur.fetchone()
        assert row is not None
        order_id = str(row[0])
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
            # The whole saga carries the order's id: the console follows it by that.
            correlation_id=order_id,
        )
        accepted = OrderAccepted(order_id=uuid.UUID(order_id), status=saga.PENDING)
        return _located(await key.answer(conn, accepted, status=202), order_id)


_ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "status",
    "reason",
    "total_cents",
    "created_at",
    "updated_at",
)


def _order(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_ORDER_COLUMNS, row, strict=True))


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
    detail = _order(order) | {
        "lines": [
            {"product_id": pid, "name": name, "quantity": q, "unit_price_cents": price}
            for pid, name, q, price in lines
        ],
        "history": [
            {"kind": kind, "status": status, "detail": text, "at": at}
            for kind, status, text, at in events
        ],
    }
    console = request.app.state.console_url
    # The console's page of the order's saga, when the shop runs one (SHOP_CONSOLE_URL).
    link = {"link": f'<{console}/correlation/{order_id}>; rel="related"'} if console else None
    return json_response(OrderDetail.model_validate(detail), headers=link)


async def list_orders(request: Request) -> Response:
    limit = read_query(request, OrderPage).limit
    async with request.app.state.courier.pool.connection() as conn:
        cur = await conn.execute(
            query("orders", "order_list_by_customer"),
            {"customer_id": principal(request).user_id, "limit": limit},
        )
        rows = await cur.fetchall()
    return json_response(Orders.model_validate({"orders": [_order(row) for row in rows]}))


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
        "Place an order (retry safely with an Idempotency-Key); Location names it",
        body=NewOrder,
        response=OrderAccepted,
        success=202,
        errors={
            422: "invalid input (errors names every field at fault), a product not on sale,"
            " a total over the limit, or an Idempotency-Key already used for another request",
            429: "too many of your orders are still being processed",
        },
        idempotent=True,
        location=True,
    ),
    Endpoint(
        "GET",
        "/orders",
        list_orders,
        "Your orders, newest first",
        query=OrderPage,
        response=Orders,
    ),
    Endpoint(
        "GET",
        "/orders/{order_id}",
        get_order,
        "An order with its lines and history",
        response=OrderDetail,
    ),
]


def create_app(settings: ServiceSettings) -> Starlette:
    async def startup(courier: Courier) -> None:
        # This process schedules the stock step's timeout: refuse a too-short one.
        await saga.check_step_timeout(courier, settings.saga_step_timeout_s)

    app = observe(service_app(settings, ENDPOINTS, on_startup=startup, consumes=c.ORDERS_INBOX))
    app.state.max_open_orders = settings.max_open_orders
    app.state.console_url = os.environ.get("SHOP_CONSOLE_URL", "").rstrip("/") or None
    return app
