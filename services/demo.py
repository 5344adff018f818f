"""The scripted demo: drives the running shop through its HTTP APIs only.

Registers a customer, creates products as the configured admin, places four
orders (one confirmed, one declined by the card, one out of stock, one whose
payment never answers and times out) and checks that each ends as expected.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .shared.polling import poll


@dataclass(frozen=True)
class Expected:
    label: str
    product: str
    quantity: int
    card_token: str
    status: str
    reason_contains: str | None


SCENARIOS = (
    Expected("confirmed", "widget", 2, "tok_visa", "confirmed", None),
    Expected("card declined", "widget", 1, "tok_decline", "cancelled", "declined"),
    Expected("out of stock", "gem", 1, "tok_visa", "cancelled", "out of stock"),
    Expected("payment times out", "widget", 1, "tok_timeout", "cancelled", "timed out"),
)
FINAL = ("confirmed", "cancelled")


class DemoFailed(Exception):
    pass


class Shop:
    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = urls
        self.http = httpx.Client(timeout=10)

    def call(
        self, service: str, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, self.urls[service] + path, headers=headers, **kwargs)

    def expect(self, response: httpx.Response, status: int) -> Any:
        if response.status_code != status:
            raise DemoFailed(
                f"{response.request.method} {response.request.url} -> "
                f"{response.status_code} {response.text}"
            )
        return response.json()

    def login(self, email: str, password: str) -> str:
        body = {"email": email, "password": password}
        return self.expect(self.call("users", "POST", "/users/login", json=body), 200)["token"]


def place_when_known(shop: Shop, token: str, body: dict[str, Any], within_s: float = 20) -> str:
    """Places an order, retrying while the orders service has not yet heard of the product."""
    last: list[httpx.Response] = []

    def place() -> str | None:
        response = shop.call("orders", "POST", "/orders", token, json=body)
        last[:] = [response]
        if response.status_code == 202:
            return str(response.json()["order_id"])
        if response.status_code != 422:
            shop.expect(response, 202)  # raises: not a product still on its way
        return None

    order_id = poll(place, within_s=within_s)
    if order_id is None:
        shop.expect(last[0], 202)  # raises, with what the service said
    return str(order_id)


def wait_final(shop: Shop, token: str, order_id: str, within_s: float) -> dict[str, Any]:
    """The order once final, or as it stands after within_s."""
    seen: list[dict[str, Any]] = []

    def final() -> dict[str, Any] | None:
        order = shop.expect(shop.call("orders", "GET", f"/orders/{order_id}", token), 200)
        seen[:] = [order]
        return order if order["status"] in FINAL else None

    return poll(final, within_s=within_s) or seen[0]


def run_demo(
    urls: Mapping[str, str], *, admin_email: str, admin_password: str, saga_step_timeout_s: float
) -> bool:
    shop = Shop(urls)
    admin = shop.login(admin_email, admin_password)
    print(f"logged in as the configured admin {admin_email}")
    email, password = f"demo-{uuid.uuid4().hex[:8]}@shop.example", "correct horse battery"
    shop.expect(
        shop.call("users", "POST", "/users/register", json={"email": email, "password": password}),
        201,
    )
    customer = shop.login(email, password)
    print(f"registered and logged in {email}")

    products = {}
    for key, body in (
        ("widget", {"name": "Widget", "category": "gadgets", "price_cents": 1999, "stock": 50}),
        ("gem", {"name": "Rare gem", "category": "gems", "price_cents": 50000, "stock": 0}),
    ):
        created = shop.expect(shop.call("products", "POST", "/products", admin, json=body), 201)
        products[key] = created["product_id"]
        print(f"created product {body['name']} (stock {body['stock']})")

    placed = []
    for case in SCENARIOS:
        body = {
            "lines": [{"product_id": products[case.product], "quantity": case.quantity}],
            "card_token": case.card_token,
        }
        placed.append((case, place_when_known(shop, customer, body)))
    print(f"placed {len(placed)} orders; waiting for their sagas to finish")

    ok = True
    for case, order_id in placed:
        order = wait_final(shop, customer, order_id, within_s=3 * saga_step_timeout_s + 30)
        reason = order.get("reason") or ""
        good = order["status"] == case.status and (
            case.reason_contains is None or case.reason_contains in reason.lower()
        )
        ok &= good
        steps = " -> ".join(e["status"] for e in order.get("history", []))
        print(
            f"  {'ok  ' if good else 'FAIL'} {case.label:<18} {order['status']:<10} "
            f"{reason or '-'}   [{steps}]"
        )

    # 50 - 2 confirmed; the declined and timed-out reservations are released by
    # compensating messages that may still be on their way.
    path = f"/products/{products['widget']}"
    widgets: list[dict[str, Any]] = []

    def compensated() -> bool | None:
        widgets[:] = [shop.expect(shop.call("products", "GET", path, admin), 200)]
        return True if widgets[0]["stock"] == 48 else None

    stock_ok = poll(compensated, within_s=15) is not None
    widget = widgets[0]
    ok &= stock_ok
    print(f"  {'ok  ' if stock_ok else 'FAIL'} widget stock after compensation: {widget['stock']}")
    return ok
