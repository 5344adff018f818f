"""The payments service: the fake provider, charges and refunds by message, the read API.

Commands are sent as the orders service would (pgcourier, admin connection);
replies are read straight from orders_inbox. No other service runs.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest

from pgcourier import Courier
from services.payments import provider
from services.payments.app import create_app
from services.payments.handlers import setup
from services.shared import contracts
from services.shared.settings import ServiceSettings
from tests.helpers import scalar, wait_until
from tests.shop.conftest import (
    acting,
    run_service_worker,
    serve_app,
    service_in_both_topologies,
    token_for,
)

ALICE = "user-alice"
ADMIN = token_for("user-root", "admin")


shop_url = service_in_both_topologies(
    "payments", "orders' commands arrive over a link, its replies wait in its outbox"
)


@pytest.fixture
async def bus(shop_url: str) -> AsyncIterator[Courier]:
    async with Courier(shop_url, pool_max_size=3) as courier:
        yield courier


@pytest.fixture
async def worker(settings_for: Callable[[str], ServiceSettings]) -> AsyncIterator[None]:
    settings = settings_for("payments")
    card_provider = provider.CardProvider(settings.database_url)
    try:
        async with run_service_worker(
            settings, functools.partial(setup, card_provider=card_provider)
        ):
            yield
    finally:
        await card_provider.close()


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
    await acting(bus, "orders").send(
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
    await acting(bus, "orders").send(
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
        cur = await conn.execute("SELECT to_regclass('pgmq.q_orders_inbox') IS NOT NULL")
        local = await cur.fetchone()
        if local and local[0]:
            query = "SELECT message, headers FROM pgmq.q_orders_inbox ORDER BY msg_id"
        else:  # orders has its own database: the replies wait in this one's outbox
            query = (
                "SELECT message, headers FROM pgcourier.outbox"
                " WHERE queue_name = 'orders_inbox' ORDER BY id"
            )
        cur = await conn.execute(query)
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
    assert provider.decide(amount, token) == expected


def test_provider_captures_any_other_token_up_to_the_limit() -> None:
    assert isinstance(provider.decide(100_000, "tok_visa"), provider.Captured)
    assert isinstance(provider.decide(1, "tok_mastercard"), provider.Captured)


@pytest.fixture
async def card_provider(
    settings_for: Callable[[str], ServiceSettings],
) -> AsyncIterator[provider.CardProvider]:
    p = provider.CardProvider(settings_for("payments").database_url)
    try:
        yield p
    finally:
        await p.close()


async def ledger(bus: Courier) -> list[tuple[Any, ...]]:
    """The provider's own record: (order_id, amount_cents, outcome, provider_ref)."""
    async with bus.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT order_id::text, amount_cents, outcome, provider_ref"
            " FROM card_provider.charge ORDER BY created_at"
        )
        return await cur.fetchall()


async def test_provider_answers_a_repeated_key_with_the_first_answer_and_charges_once(
    bus: Courier, card_provider: provider.CardProvider
) -> None:
    order_id = new_order()
    args = {"order_id": order_id, "amount_cents": 900, "card_token": "tok_visa"}
    first = await card_provider.charge(idempotency_key="k-1", **args)
    assert isinstance(first, provider.Captured) and first.provider_ref.startswith("fake_")
    assert await card_provider.charge(idempotency_key="k-1", **args) == first
    assert await ledger(bus) == [(order_id, 900, "captured", first.provider_ref)]
    # Another key is another charge, with its own reference.
    other = await card_provider.charge(idempotency_key="k-2", **args)
    assert isinstance(other, provider.Captured) and other != first


async def test_provider_refuses_a_key_reused_for_another_charge(
    bus: Courier, card_provider: provider.CardProvider
) -> None:
    order_id = new_order()
    await card_provider.charge(
        idempotency_key="k", order_id=order_id, amount_cents=900, card_token="tok_visa"
    )
    with pytest.raises(provider.IdempotencyConflict):
        await card_provider.charge(
            idempotency_key="k", order_id=order_id, amount_cents=901, card_token="tok_visa"
        )
    assert len(await ledger(bus)) == 1


async def test_provider_keeps_declines_and_records_nothing_when_it_never_answers(
    bus: Courier, card_provider: provider.CardProvider
) -> None:
    declined, silent = new_order(), new_order()
    answer = await card_provider.charge(
        idempotency_key="d", order_id=declined, amount_cents=5, card_token="tok_decline"
    )
    assert answer == provider.Declined("card declined")
    assert (
        await card_provider.charge(
            idempotency_key="t", order_id=silent, amount_cents=5, card_token="tok_timeout"
        )
        is None
    )
    assert await ledger(bus) == [(declined, 5, "declined", None)]


async def test_provider_ledger_survives_a_rollback_of_the_caller_transaction(
    shop_url: str, bus: Courier, card_provider: provider.CardProvider
) -> None:
    order_id = new_order()
    conn = await psycopg.AsyncConnection.connect(shop_url)
    async with conn, conn.transaction(force_rollback=True):
        await conn.execute("SELECT 1")
        await card_provider.charge(
            idempotency_key="r", order_id=order_id, amount_cents=7, card_token="tok_visa"
        )
    assert [row[:3] for row in await ledger(bus)] == [(order_id, 7, "captured")]


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


async def dead_letters(bus: Courier) -> list[tuple[str | None, int, str]]:
    """(type, attempts, last error) of every dead letter."""
    async with bus.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT headers ->> 'type', attempts, errors -> -1 ->> 'error'"
            " FROM pgcourier.dead_letter ORDER BY dead_letter_id"
        )
        return await cur.fetchall()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            {"order_id": "not-a-uuid", "customer_id": ALICE, "amount_cents": 1, "card_token": "t"},
            "order_id must be a UUID string",
        ),
        (
            {"order_id": str(uuid.uuid4()), "customer_id": ALICE, "amount_cents": 2**31},
            "amount_cents must be an integer from 0 to 2147483647",
        ),
        (["not", "an", "object"], "payload must be a JSON object"),
    ],
)
async def test_malformed_charge_takes_no_payment_and_is_dead_lettered_at_once_with_its_reason(
    bus: Courier, worker: None, payload: Any, reason: str
) -> None:
    await acting(bus, "orders").send(
        contracts.PAYMENTS_INBOX, payload, type=contracts.PAYMENT_CHARGE
    )
    await wait_until(lambda: _is_zero(bus, "SELECT count(*) FROM pgmq.q_payments_inbox"))
    [(kind, attempts, error)] = await dead_letters(bus)
    assert (kind, attempts) == (contracts.PAYMENT_CHARGE, 1)
    assert error.startswith("InvalidPayload: ") and reason in error
    assert await scalar(bus, "SELECT count(*) FROM payments.payment") == 0
    assert await replies(bus) == []


async def test_malformed_refund_is_dead_lettered_at_once(bus: Courier, worker: None) -> None:
    await acting(bus, "orders").send(
        contracts.PAYMENTS_INBOX, {"order_id": 7}, type=contracts.PAYMENT_REFUND
    )
    await wait_until(lambda: _is_zero(bus, "SELECT count(*) FROM pgmq.q_payments_inbox"))
    [(kind, attempts, error)] = await dead_letters(bus)
    assert (kind, attempts) == (contracts.PAYMENT_REFUND, 1)
    assert "order_id must be a UUID string" in error


class LosesItsTransactionOnce(provider.CardProvider):
    """Charges, then fails as a connection lost right after the provider answered
    would: the handler's transaction rolls back and the command is retried."""

    def __init__(self, conninfo: str) -> None:
        super().__init__(conninfo)
        self.calls = 0

    async def charge(self, **kwargs: Any) -> provider.Answer | None:
        self.calls += 1
        answer = await super().charge(**kwargs)
        if self.calls == 1:
            raise ConnectionResetError("lost after the provider answered")
        return answer


async def test_a_charge_whose_transaction_was_lost_after_the_provider_answered_charges_once(
    bus: Courier, settings_for: Callable[[str], ServiceSettings]
) -> None:
    settings = settings_for("payments")
    flaky = LosesItsTransactionOnce(settings.database_url)
    order_id = new_order()
    try:
        async with run_service_worker(settings, functools.partial(setup, card_provider=flaky)):
            await charge(bus, order_id, amount_cents=4200)
            await handled(bus)
    finally:
        await flaky.close()
    assert flaky.calls == 2  # the first attempt's transaction was rolled back, then retried
    [payment] = await payments_of(bus, order_id)
    [(charged_order, amount, outcome, ref)] = await ledger(bus)
    assert (charged_order, amount, outcome) == (order_id, 4200, "captured")
    # The retry got the provider's first answer: the same charge, not a second one.
    assert (payment["status"], payment["provider_ref"]) == ("captured", ref)
    assert [kind for kind, _, _ in await replies(bus)] == [contracts.PAYMENT_CAPTURED]


async def test_provider_captured_total_equals_captured_payments(bus: Courier, worker: None) -> None:
    orders = [new_order() for _ in range(4)]
    await charge(bus, orders[0], amount_cents=100)
    await charge(bus, orders[1], amount_cents=250)
    await charge(bus, orders[2], amount_cents=300, card_token="tok_decline")
    await charge(bus, orders[3], amount_cents=400, card_token="tok_timeout")
    await refund(bus, orders[1])
    await handled(bus)
    checks = """
        SELECT
          (SELECT coalesce(sum(amount_cents), 0) FROM card_provider.charge
           WHERE outcome = 'captured'),
          (SELECT coalesce(sum(amount_cents), 0) FROM payments.payment
           WHERE status IN ('captured', 'refunded')),
          (SELECT count(*) FROM (SELECT order_id FROM card_provider.charge
           WHERE outcome = 'captured' GROUP BY order_id HAVING count(*) > 1) twice)
    """
    async with bus.pool.connection() as conn:
        cur = await conn.execute(checks)
        assert await cur.fetchone() == (350, 350, 0)


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


@pytest.mark.parametrize("order_id", ["not-a-uuid", "9d1c6f3e-2b7a-4e58-8c0d-5a3f1e7b2c94"])
async def test_unknown_or_malformed_order_is_404_json(
    client: httpx.AsyncClient, order_id: str
) -> None:
    response = await client.get(f"/orders/{order_id}/payments", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "path", ["/orders/6e2f9a14-8c3b-4d71-a0e5-3b9c7d2f1e86/payments", "/payments/summary"]
)
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


async def test_provider_ledger_keeps_a_fingerprint_and_last_four_not_the_card_token(
    bus: Courier, card_provider: provider.CardProvider
) -> None:
    order_id = new_order()
    token = "tok_4242424242424242"
    await card_provider.charge(
        idempotency_key="f", order_id=order_id, amount_cents=900, card_token=token
    )
    async with bus.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT card_fingerprint, card_last4, c::text LIKE %s FROM card_provider.charge c",
            [f"%{token}%"],
        )
        assert await cur.fetchall() == [(provider.card_fingerprint(token), "4242", False)]
    # The fingerprint still tells another card under the same key from the first one.
    with pytest.raises(provider.IdempotencyConflict):
        await card_provider.charge(
            idempotency_key="f", order_id=order_id, amount_cents=900, card_token="tok_other"
        )


@pytest.mark.usefixtures("worker")
async def test_no_payments_table_holds_the_card_token_after_settlement(bus: Courier) -> None:
    captured, declined = new_order(), new_order()
    await charge(bus, captured, card_token="tok_secret_visa")
    await charge(bus, declined, card_token="tok_decline")

    async def settled() -> bool:
        settled = "SELECT count(*) FROM payments.payment WHERE status <> 'pending'"
        return await scalar(bus, settled) == 2

    await wait_until(settled, within=10, interval=0.05)
    for leaked in (
        "SELECT count(*) FROM payments.payment t WHERE t::text ~ 'tok_(secret_visa|decline)'",
        "SELECT count(*) FROM card_provider.charge t WHERE t::text ~ 'tok_(secret_visa|decline)'",
    ):
        assert await scalar(bus, leaked) == 0, leaked
