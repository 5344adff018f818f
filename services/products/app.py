"""The products HTTP API: admins write the catalog and stock, signed-in users read it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcourier import Courier
from services.shared import idempotency
from services.shared.contracts import PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCTS_INBOX
from services.shared.http import (
    Endpoint,
    HTTPError,
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

# Far below the integer column's limit, so that stock arithmetic never overflows.
MAX_STOCK = 1_000_000_000

NEW_PRODUCT = Schema(
    (
        Field("name", str, min_length=1, max_length=200),
        Field("description", str, required=False, max_length=2000),
        Field("category", str, min_length=1, max_length=100),
        Field("price_cents", int, minimum=0, maximum=100_000_000),
        Field("stock", int, required=False, minimum=0, maximum=MAX_STOCK),
    )
)
PRODUCT_CHANGES = Schema(
    (
        Field("name", str, min_length=1, max_length=200),
        Field("description", str, max_length=2000),
        Field("category", str, min_length=1, max_length=100),
        Field("price_cents", int, minimum=0, maximum=100_000_000),
        Field("active", bool),
    ),
    partial=True,
)
STOCK_CHANGE = Schema((Field("delta", int, minimum=-MAX_STOCK, maximum=MAX_STOCK),))


def _q(name: str) -> Any:
    return query("products", name)


def _trimmed(body: dict[str, Any], field: str) -> None:
    """Strips a name-like field in place; blank after stripping is invalid."""
    if field in body:
        body[field] = body[field].strip()
        if not body[field]:
            raise HTTPError(422, "validation_error", "must not be blank", field=field)


def _product_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "product_id": str(row["product_id"]),
        "name": row["name"],
        "description": row["description"],
        "category": row["category"],
        "price_cents": row["price_cents"],
        "active": row["active"],
        "stock": row["stock"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def _publish(
    courier: Courier, conn: psycopg.AsyncConnection, topic: str, row: dict[str, Any]
) -> None:
    """The event goes out in the caller's transaction: it exists iff the change commits."""
    product_id = str(row["product_id"])
    event = {
        "product_id": product_id,
        "name": row["name"],
        "price_cents": row["price_cents"],
        "active": row["active"],
    }
    await courier.publish(topic, event, type=topic, ordering_key=product_id, conn=conn)


async def create_product(request: Request) -> Response:
    body = await read_json(request, NEW_PRODUCT)
    _trimmed(body, "name")
    _trimmed(body, "category")
    key = idempotency.RequestKey.of(request, body, caller=principal(request).user_id)
    courier: Courier = request.app.state.courier
    async with courier.pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            return first
        await conn.execute(_q("category_ensure"), {"name": body["category"]})
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            _q("product_insert"),
            {
                "name": body["name"],
                "description": body.get("description", ""),
                "category": body["category"],
                "price_cents": body["price_cents"],
                "stock": body.get("stock", 0),
            },
        )
        row = await cur.fetchone()
        assert row is not None
        await _publish(courier, conn, PRODUCT_CREATED, row)
        return await key.answer(conn, _product_json(row), status=201)


async def update_product(request: Request) -> Response:
    product_id = path_uuid(request, "product_id", "product")
    body = await read_json(request, PRODUCT_CHANGES)
    _trimmed(body, "name")
    _trimmed(body, "category")
    courier: Courier = request.app.state.courier
    async with courier.pool.connection() as conn, conn.transaction():
        if "category" in body:
            await conn.execute(_q("category_ensure"), {"name": body["category"]})
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            _q("product_update"),
            {
                "product_id": product_id,
                **{f: body.get(f) for f in ("name", "description", "category", "price_cents")},
                "active": body.get("active"),
            },
        )
        row = await cur.fetchone()
        if row is None:
            raise not_found("product")
        await _publish(courier, conn, PRODUCT_UPDATED, row)
    return JSONResponse(_product_json(row))


async def list_products(request: Request) -> Response:
    params = {
        "category": request.query_params.get("category"),
        "include_inactive": principal(request).is_admin,
    }
    async with request.app.state.courier.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_q("product_list"), params)
        rows = await cur.fetchall()
    return JSONResponse({"products": [_product_json(r) for r in rows]})


async def get_product(request: Request) -> Response:
    product_id = path_uuid(request, "product_id", "product")
    # Customers see the catalog as it is sold: a withdrawn product is not there.
    params = {"product_id": product_id, "include_inactive": principal(request).is_admin}
    async with request.app.state.courier.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_q("product_get"), params)
        row = await cur.fetchone()
    if row is None:
        raise not_found("product")
    return JSONResponse(_product_json(row))


async def list_categories(request: Request) -> Response:
    async with request.app.state.courier.pool.connection() as conn:
        cur = await conn.execute(_q("category_list"))
        rows = await cur.fetchall()
    return JSONResponse({"categories": [{"name": name} for (name,) in rows]})


async def adjust_stock(request: Request) -> Response:
    product_id = path_uuid(request, "product_id", "product")
    body = await read_json(request, STOCK_CHANGE)
    if body["delta"] == 0:
        raise HTTPError(422, "validation_error", "must not be zero", field="delta")
    params = {"product_id": product_id, "delta": body["delta"], "max_stock": MAX_STOCK}
    # A delta is not idempotent by itself: a retried +10 must not add 20.
    key = idempotency.RequestKey.of(request, body, caller=principal(request).user_id)
    async with request.app.state.courier.pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            return first
        cur = await conn.execute(_q("product_stock_adjust"), params)
        row = await cur.fetchone()
        if row is None:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_q("product_get"), {**params, "include_inactive": True})
            current = await cur.fetchone()
            if current is None:
                raise not_found("product")
            raise HTTPError(
                409,
                "stock_out_of_range",
                f"stock {current['stock']} {body['delta']:+d} would leave 0..{MAX_STOCK}",
            )
        return await key.answer(conn, {"product_id": str(row[0]), "stock": row[1]}, status=200)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/products",
        create_product,
        "Add a product (retry safely with an Idempotency-Key)",
        "admin",
        NEW_PRODUCT,
        201,
        idempotent=True,
    ),
    Endpoint("GET", "/products", list_products, "List products, optionally ?category="),
    Endpoint("GET", "/products/{product_id}", get_product, "One product"),
    Endpoint(
        "PATCH",
        "/products/{product_id}",
        update_product,
        "Change a product's details",
        "admin",
        PRODUCT_CHANGES,
    ),
    Endpoint(
        "POST",
        "/products/{product_id}/stock",
        adjust_stock,
        "Add or remove stock (409 if it would go negative; retry with an Idempotency-Key)",
        "admin",
        STOCK_CHANGE,
        idempotent=True,
    ),
    Endpoint("GET", "/categories", list_categories, "List categories"),
]


def create_app(settings: ServiceSettings) -> Starlette:
    return observe(service_app(settings, ENDPOINTS, consumes=PRODUCTS_INBOX))
