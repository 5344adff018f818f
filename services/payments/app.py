"""The payments HTTP API: read-only, since payments are taken through messages only."""

from __future__ import annotations

from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from services.shared.contracts import PAYMENTS_INBOX
from services.shared.http import (
    Endpoint,
    json_response,
    not_found,
    path_uuid,
    principal,
    service_app,
)
from services.shared.metrics import observe
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from .models import Payments, Summary


async def order_payments(request: Request) -> Response:
    order_id = path_uuid(request, "order_id", "order")
    async with (
        request.app.state.courier.pool.connection() as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(query("payments", "payment_list"), {"order_id": order_id})
        rows = await cur.fetchall()
    who = principal(request)
    # Someone else's order is reported as missing, so order ids cannot be probed.
    if not who.is_admin:
        rows = [row for row in rows if row["customer_id"] == who.user_id]
    if not rows:
        raise not_found("order")
    return json_response(Payments.model_validate({"payments": rows}))


async def summary(request: Request) -> Response:
    async with request.app.state.courier.pool.connection() as conn:
        cur = await conn.execute(query("payments", "payment_summary"))
        row = await cur.fetchone()
    captured, refunded = (int(row[0]), int(row[1])) if row else (0, 0)
    return json_response(
        Summary(captured_cents=captured, refunded_cents=refunded, net_cents=captured - refunded)
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/orders/{order_id}/payments",
        order_payments,
        "The payments of one of your orders (any order for an admin); 404 otherwise",
        access="user",
        response=Payments,
    ),
    Endpoint(
        "GET",
        "/payments/summary",
        summary,
        "Money captured, refunded and still held, in cents (admins only)",
        access="admin",
        response=Summary,
    ),
]


def create_app(settings: ServiceSettings) -> Starlette:
    return observe(service_app(settings, ENDPOINTS, consumes=PAYMENTS_INBOX))
