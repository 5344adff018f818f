"""The payments service's HTTP contract: its answers (it takes no request body)."""

from __future__ import annotations

from services.shared.models import Id, ResponseBody, Timestamp


class Payment(ResponseBody):
    payment_id: Id
    order_id: Id
    customer_id: str | None
    amount_cents: int
    status: str
    reason: str | None
    provider_ref: str | None
    refunded_cents: int
    created_at: Timestamp
    updated_at: Timestamp


class Payments(ResponseBody):
    payments: list[Payment]


class Summary(ResponseBody):
    captured_cents: int
    refunded_cents: int
    net_cents: int
