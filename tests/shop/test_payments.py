"""The payments service: the fake provider, charges and refunds by message, the read API.

Commands are sent as the orders service would (pgcourier, admin connection);
replies are read straight from orders_inbox. No other service runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from pgcourier import Courier
from services.payments import provider
from services.payments.app import create_app
from services.payments.handlers import setup
from services.shared import contracts
from services.shared.settings import ServiceSettings
from tests.helpers import scalar, wait_until
from tests.shop.conftest import run_service_worker, serve_app, token_for

ALICE = "user-alice"
ADMIN = token_for("user-root", "admin")


@pytest.fixture
async def bus(shop_url: str) -> AsyncIterator[Courier]:
    async with Courier(shop_url, pool_max_size=3) as courier:
        yield courier


@pytest.fixture
async def worker(settings_for: Callable[[str], ServiceSettings]) -> AsyncIterator[None]:
    async with run_service_worker(settings_for("payments"), setup):
        yield


@pytest.fixture
async def client(
    settings_for: Callable[[str], ServiceSettings],
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(settings_for("payments"))) as c:
        yield c


async def charge(
    bus: Courier,
    order_id: str,
    *,
    amount_cents: int = 1500,
    card_token: str = "tok_visa",
    customer_id: str = ALICE,
    ordered: bool = True,
) -> None:
    await bus.send(
        contracts.PAYMENTS_INBOX,
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "amount_cents": amount_cents,
            "card_token": card_token,
        },
        type=contracts.PAYMENT_CHARGE,
        ordering_key=order_id if ordered else None,
    )


async def refund(bus: Courier, order_id: str) -> None:
    await bus.send(
        contracts.PAYMENTS_INBOX,
        {"order_id": order_id},
        type=contracts.PAYMENT_REFUND,
        ordering_key=order_id,
    )


async def handled(bus: Courier) -> None:
    """Waits until payments_inbox is empty: every command was handled and acknowledged."""
    await wait_until(lambda: _is_zero(bus, "SELECT count(*) FROM pgmq.q_payments_inbox"))
    assert await scalar(bus, "SELECT count(*) FROM pgcourier.dead_letter") == 0


async def _is_zero(bus: Courier, sql: str) -> bool:
    return await scalar(bus, sql) == 0


async def replies(bus: Courier) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(type, payload, headers) of everything sent to orders_inbox, oldest first."""
    async with bus.pool.connection() as conn:
        cur = await conn.execute("SELECT message, headers FROM pgmq.q_orders_inbox ORDER BY msg_id")
        rows = await cur.fetchall()
    return [(headers["type"], message, headers) for message, headers in rows]


async def payments_of(bus: Courier, order_id: str) -> list[dict[str, Any]]:
    async with bus.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, customer_id, amount_cents, refunded_cents, reason, provider_ref"
            " FROM payments.payment WHERE order_id = %s",
            [order_id],
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def new_order() -> str:
    return str(uuid.uuid4())


# -- the provider ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "token", "expected"),
    [
        (1500, "tok_decline", provider.Declined("card declined")),
        (100_001, "tok_visa", provider.Declined("amount over limit")),
        (1500, "", provider.Declined("card token missing")),
        (1500, "tok_timeout", None),
    ],
)
def test_provider_declines_or_never_answers_by_its_rules(
    amount: int, token: str, expected: provider.Answer | None
) -> None:
    assert provider.charge("p-1", amount, token) == expected


def test_provider_captures_any_other_token_up_to_the_limit_with_a_stable_reference() -> None:
    first = provider.charge("p-1", 100_000, "tok_visa")
    assert isinstance(first, provider.Captured)
    assert first == provider.charge("p-1", 100_000, "tok_mastercard")
    assert first != provider.charge("p-2", 100_000, "tok_visa")


# -- charges ---------------------------------------------------------------------


async def test_captured_charge_is_recorded_and_reported_to_orders(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await charge(bus, order_id, amount_cents=4200)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert payment["status"] == "captured"
    assert payment["amount_cents"] == 4200
    assert payment["customer_id"] == ALICE
    assert payment["provider_ref"].startswith("fake_")
    [(kind, body, headers)] = await replies(bus)
    assert kind == contracts.PAYMENT_CAPTURED
    assert body["order_id"] == order_id
    assert body["amount_cents"] == 4200
    uuid.UUID(body["payment_id"])
    assert headers["x-pgmq-group"] == order_id


@pytest.mark.parametrize(
    ("amount", "token", "reason"),
    [(1500, "tok_decline", "card declined"), (100_001, "tok_visa", "amount over limit")],
)
async def test_declined_charge_is_recorded_with_its_reason_and_reported(
    bus: Courier, worker: None, amount: int, token: str, reason: str
) -> None:
    order_id = new_order()
    await charge(bus, order_id, amount_cents=amount, card_token=token)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["reason"]) == ("declined", reason)
    [(kind, body, headers)] = await replies(bus)
    assert kind == contracts.PAYMENT_DECLINED
    assert body == {"order_id": order_id, "reason": reason}
    assert headers["x-pgmq-group"] == order_id


async def test_provider_that_never_answers_leaves_a_pending_payment_and_no_reply(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await charge(bus, order_id, card_token="tok_timeout")
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert payment["status"] == "pending"
    assert await replies(bus) == []


async def test_charging_an_order_twice_takes_one_payment_and_replies_once(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await charge(bus, order_id, amount_cents=700)
    await charge(bus, order_id, amount_cents=900, card_token="tok_decline")
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["amount_cents"]) == ("captured", 700)
    assert [kind for kind, _, _ in await replies(bus)] == [contracts.PAYMENT_CAPTURED]


async def test_simultaneous_duplicate_charges_still_take_one_payment(
    bus: Courier, worker: None
) -> None:
    # No ordering key: the worker may claim and handle these in parallel.
    order_id = new_order()
    for _ in range(5):
        await charge(bus, order_id, ordered=False)
    await handled(bus)
    assert len(await payments_of(bus, order_id)) == 1
    assert len(await replies(bus)) == 1


async def test_malformed_charge_takes_no_payment_and_is_retried_with_its_error(
    bus: Courier, worker: None
) -> None:
    await bus.send(
        contracts.PAYMENTS_INBOX,
        {"order_id": "not-a-uuid", "customer_id": ALICE, "amount_cents": 1, "card_token": "t"},
        type=contracts.PAYMENT_CHARGE,
    )
    errors = (
        "SELECT count(*) FROM pgmq.q_payments_inbox"
        " WHERE headers -> 'pgcourier_errors' @> '[{}]'::jsonb"
    )
    await wait_until(lambda: _nonzero(bus, errors))
    assert await scalar(bus, "SELECT count(*) FROM payments.payment") == 0
    assert await replies(bus) == []


async def _nonzero(bus: Courier, sql: str) -> bool:
    return bool(await scalar(bus, sql))


# -- refunds ---------------------------------------------------------------------


async def test_refund_of_a_captured_payment_gives_back_all_of_it_once(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await charge(bus, order_id, amount_cents=2500)
    await refund(bus, order_id)
    await refund(bus, order_id)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["refunded_cents"]) == ("refunded", 2500)
    [captured, refunded] = [(kind, body) for kind, body, _ in await replies(bus)]
    assert captured[0] == contracts.PAYMENT_CAPTURED
    assert refunded == (contracts.PAYMENT_REFUNDED, {"order_id": order_id, "amount_cents": 2500})


async def test_refund_of_a_pending_payment_voids_it_and_reports_nothing_given_back(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await charge(bus, order_id, card_token="tok_timeout")
    await refund(bus, order_id)
    await refund(bus, order_id)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["refunded_cents"]) == ("voided", 0)
    assert [(kind, body) for kind, body, _ in await replies(bus)] == [
        (contracts.PAYMENT_REFUNDED, {"order_id": order_id, "amount_cents": 0})
    ]


async def test_refund_of_a_declined_payment_says_nothing_more(bus: Courier, worker: None) -> None:
    order_id = new_order()
    await charge(bus, order_id, card_token="tok_decline")
    await refund(bus, order_id)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert payment["status"] == "declined"
    assert [kind for kind, _, _ in await replies(bus)] == [contracts.PAYMENT_DECLINED]


async def test_refund_before_any_charge_leaves_a_tombstone_so_a_late_charge_never_captures(
    bus: Courier, worker: None
) -> None:
    order_id = new_order()
    await refund(bus, order_id)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["amount_cents"]) == ("voided", 0)

    await charge(bus, order_id, amount_cents=3000)
    await handled(bus)
    [payment] = await payments_of(bus, order_id)
    assert (payment["status"], payment["amount_cents"]) == ("voided", 0)
    assert [(kind, body) for kind, body, _ in await replies(bus)] == [
        (contracts.PAYMENT_REFUNDED, {"order_id": order_id, "amount_cents": 0})
    ]


# -- HTTP ------------------------------------------------------------------------


async def test_order_payments_are_shown_to_their_owner_and_to_admins_only(
    bus: Courier, worker: None, client: httpx.AsyncClient
) -> None:
    order_id = new_order()
    await charge(bus, order_id, amount_cents=1234, customer_id=ALICE)
    await handled(bus)
    path = f"/orders/{order_id}/payments"

    for headers in (token_for(ALICE), ADMIN):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200
        [payment] = response.json()["payments"]
        assert payment["order_id"] == order_id
        assert payment["customer_id"] == ALICE
        assert (payment["status"], payment["amount_cents"]) == ("captured", 1234)
        uuid.UUID(payment["payment_id"])

    response = await client.get(path, headers=token_for("user-bob"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("order_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_unknown_or_malformed_order_is_404_json(
    client: httpx.AsyncClient, order_id: str
) -> None:
    response = await client.get(f"/orders/{order_id}/payments", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("path", [f"/orders/{uuid.uuid4()}/payments", "/payments/summary"])
async def test_reading_payments_needs_a_valid_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert (await client.get(path, headers=bad)).status_code == 401


async def test_summary_is_for_admins_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/payments/summary", headers=token_for(ALICE))
    assert response.status_code == 403


async def test_summary_counts_every_capture_and_every_refund(
    bus: Courier, worker: None, client: httpx.AsyncClient
) -> None:
    kept, refunded = new_order(), new_order()
    await charge(bus, kept, amount_cents=1000)
    await charge(bus, refunded, amount_cents=2500)
    await charge(bus, new_order(), amount_cents=400, card_token="tok_decline")
    pending = new_order()
    await charge(bus, pending, amount_cents=800, card_token="tok_timeout")
    await refund(bus, refunded)
    await refund(bus, pending)
    await refund(bus, new_order())
    await handled(bus)
    response = await client.get("/payments/summary", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"captured_cents": 3500, "refunded_cents": 2500, "net_cents": 1000}


async def test_summary_of_no_payments_is_zero(client: httpx.AsyncClient) -> None:
    response = await client.get("/payments/summary", headers=ADMIN)
    assert response.json() == {"captured_cents": 0, "refunded_cents": 0, "net_cents": 0}
