"""The orders service's HTTP contract: its request bodies, query and answers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.shared.models import Id, Query, RequestBody, ResponseBody, Timestamp, query_int

LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 100


class NewLine(RequestBody):
    product_id: Id
    quantity: Annotated[int, Field(ge=1, le=1000)]


class NewOrder(RequestBody):
    lines: Annotated[list[NewLine], Field(min_length=1, max_length=50)]
    card_token: Annotated[str, Field(min_length=1, max_length=100)]


class OrderPage(Query):
    # query_int builds an Annotated int at import time (see services/shared/models.py),
    # which pydantic reads and mypy, seeing a call in a type position, cannot.
    limit: query_int(1, LIST_LIMIT_MAX) = LIST_LIMIT_DEFAULT  # type: ignore[valid-type]


class OrderAccepted(ResponseBody):
    order_id: Id
    status: str = Field(description="pending: the saga has started; GET the order to follow it")


class Order(ResponseBody):
    order_id: Id
    customer_id: str
    status: str
    reason: str | None
    total_cents: int
    created_at: Timestamp
    updated_at: Timestamp


class Line(ResponseBody):
    product_id: Id
    name: str
    quantity: int
    unit_price_cents: int


class Event(ResponseBody):
    kind: str
    status: str
    detail: str
    at: Timestamp


class OrderDetail(Order):
    lines: list[Line]
    history: list[Event]


class Orders(ResponseBody):
    orders: list[Order]
