"""The products HTTP API: admins write the catalog and stock, signed-in users read it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from pgcourier import Courier
from services.shared import idempotency
from services.shared.contracts import PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCTS_INBOX
from services.shared.http import (
    Endpoint,
    HTTPError,
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

from .models import (
    MAX_STOCK,
    Categories,
    NewProduct,
    Product,
    ProductChanges,
    ProductFilter,
    Products,
    StockChange,
    StockLevel,
)


def _q(name: str) -> Any:
    return query("products", name)


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
    body = await read_json(request, NewProduct)
    key = idempotency.RequestKey.of(request, body, caller=principal(request).user_id)
    courier: Courier = request.app.state.courier
    async with courier.pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            return first
        await conn.execute(_q("category_ensure"), {"name": body.category})
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_q("product_insert"), body.model_dump())
        row = await cur.fetchone()
        assert row is not None
        await _publish(courier, conn, PRODUCT_CREATED, row)
        return await key.answer(conn, Product.model_validate(row), status=201)


async def update_product(request: Request) -> Response:
    product_id = path_uuid(request, "product_id", "product")
    body = await read_json(request, ProductChanges)
    courier: Courier = request.app.state.courier
    async with courier.pool.connection() as conn, conn.transaction():
        if body.category is not None:
            await conn.execute(_q("category_ensure"), {"name": body.category})
        cur = conn.cursor(row_factory=dict_row)
        # A field left out is None: the query keeps its value.
        await cur.execute(_q("product_update"), {"product_id": product_id, **body.model_dump()})
        row = await cur.fetchone()
        if row is None:
            raise not_found("product")
        await _publish(courier, conn, PRODUCT_UPDATED, row)
    return json_response(Product.model_validate(row))


async def list_products(request: Request) -> Response:
    params = {
        "category": read_query(request, ProductFilter).category,
        "include_inactive": principal(request).is_admin,
    }
    async with request.app.state.courier.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_q("product_list"), params)
        rows = await cur.fetchall()
    return json_response(Products.model_validate({"products": rows}))


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
    return json_response(Product.model_validate(row))


async def list_categories(request: Request) -> Response:
    async with request.app.state.courier.pool.connection() as conn:
        cur = await conn.execute(_q("category_list"))
        rows = await cur.fetchall()
    return json_response(Categories.model_validate({"categories": [{"name": n} for (n,) in rows]}))


async def adjust_stock(request: Request) -> Response:
    product_id = path_uuid(request, "product_id", "product")
    body = await read_json(request, StockChange)
    params = {"product_id": product_id, "delta": body.delta, "max_stock": MAX_STOCK}
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
                f"stock {current['stock']} {body.delta:+d} would leave 0..{MAX_STOCK}",
            )
        level = StockLevel(product_id=row[0], stock=row[1])
        return await key.answer(conn, level, status=200)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/products",
        create_product,
        "Add a product (retry safely with an Idempotency-Key)",
        access="admin",
        body=NewProduct,
        response=Product,
        success=201,
        idempotent=True,
    ),
    Endpoint(
        "GET",
        "/products",
        list_products,
        "List products on sale (every product, for an admin), optionally of one category",
        query=ProductFilter,
        response=Products,
    ),
    Endpoint("GET", "/products/{product_id}", get_product, "One product", response=Product),
    Endpoint(
        "PATCH",
        "/products/{product_id}",
        update_product,
        "Change a product's details",
        access="admin",
        body=ProductChanges,
        response=Product,
    ),
    Endpoint(
        "POST",
        "/products/{product_id}/stock",
        adjust_stock,
        "Add or remove stock (409 if it would go negative; retry with an Idempotency-Key)",
        access="admin",
        body=StockChange,
        response=StockLevel,
        errors={409: "the stock would leave 0..1,000,000,000"},
        idempotent=True,
    ),
    Endpoint("GET", "/categories", list_categories, "List categories", response=Categories),
]


def create_app(settings: ServiceSettings) -> Starlette:
    return observe(service_app(settings, ENDPOINTS, consumes=PRODUCTS_INBOX))
