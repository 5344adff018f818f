"""The order saga's state machine as a table: every reply or timeout, in every status.

`saga.decide` is pure, so the whole machine is proven here without a database or a
clock; the shop tests prove that handlers carry decisions out.
"""

from __future__ import annotations

import pytest

from services.orders import saga
from services.shared import contracts as c

P, A, OK, X = saga.PENDING, saga.AWAITING_PAYMENT, saga.CONFIRMED, saga.CANCELLED
STATUSES = (P, A, OK, X)
STOCK = {"step": saga.STEP_STOCK}
PAYMENT = {"step": saga.STEP_PAYMENT}
NO_STEP: dict = {}

# (message, payload, status) -> (to_status, sends, timeout started); "ignored": history
# only; None: nothing at all, not even history.
TABLE = [
    (c.STOCK_RESERVED, NO_STEP, P, (A, (c.PAYMENT_CHARGE,), saga.STEP_PAYMENT)),
    (c.STOCK_RESERVED, NO_STEP, A, "ignored"),
    (c.STOCK_RESERVED, NO_STEP, OK, "ignored"),
    (c.STOCK_RESERVED, NO_STEP, X, (None, (c.STOCK_RELEASE,), None)),
    (c.STOCK_REJECTED, NO_STEP, P, (X, (), None)),
    (c.STOCK_REJECTED, NO_STEP, A, "ignored"),
    (c.STOCK_REJECTED, NO_STEP, OK, "ignored"),
    (c.STOCK_REJECTED, NO_STEP, X, "ignored"),
    (c.PAYMENT_CAPTURED, NO_STEP, P, "ignored"),
    (c.PAYMENT_CAPTURED, NO_STEP, A, (OK, (), None)),
    (c.PAYMENT_CAPTURED, NO_STEP, OK, "ignored"),
    (c.PAYMENT_CAPTURED, NO_STEP, X, (None, (c.PAYMENT_REFUND,), None)),
    (c.PAYMENT_DECLINED, NO_STEP, P, "ignored"),
    (c.PAYMENT_DECLINED, NO_STEP, A, (X, (c.STOCK_RELEASE,), None)),
    (c.PAYMENT_DECLINED, NO_STEP, OK, "ignored"),
    (c.PAYMENT_DECLINED, NO_STEP, X, "ignored"),
    (c.SAGA_TIMEOUT, STOCK, P, (X, (c.STOCK_RELEASE,), None)),
    (c.SAGA_TIMEOUT, STOCK, A, None),
    (c.SAGA_TIMEOUT, STOCK, OK, None),
    (c.SAGA_TIMEOUT, STOCK, X, None),
    (c.SAGA_TIMEOUT, PAYMENT, P, None),
    (c.SAGA_TIMEOUT, PAYMENT, A, (X, (c.STOCK_RELEASE, c.PAYMENT_REFUND), None)),
    (c.SAGA_TIMEOUT, PAYMENT, OK, None),
    (c.SAGA_TIMEOUT, PAYMENT, X, None),
    (c.SAGA_TIMEOUT, {"step": "nonsense"}, P, None),
    *((c.STOCK_RELEASED, NO_STEP, s, (None, (), None)) for s in STATUSES),
    *((c.PAYMENT_REFUNDED, NO_STEP, s, (None, (), None)) for s in STATUSES),
]


@pytest.mark.parametrize(("kind", "payload", "status", "expected"), TABLE)
def test_each_message_in_each_status_moves_the_order_as_the_table_says(
    kind: str, payload: dict, status: str, expected: object
) -> None:
    decision = saga.decide(kind, status, payload)
    if expected is None:
        assert decision is None
        return
    assert decision is not None
    if expected == "ignored":
        assert (decision.to_status, decision.sends, decision.timeout) == (None, (), None)
        assert decision.detail == f"{kind} ignored: order is {status}"
        return
    assert (decision.to_status, decision.sends, decision.timeout) == expected


def test_the_table_covers_every_message_the_saga_receives_in_every_status() -> None:
    from services.orders.handlers import SAGA_MESSAGES

    covered = {(kind, status) for kind, _, status, _ in TABLE}
    assert covered == {(kind, status) for kind in SAGA_MESSAGES for status in STATUSES}


@pytest.mark.parametrize(
    ("kind", "payload", "status", "lost"),
    [
        (c.SAGA_TIMEOUT, STOCK, P, True),  # a sale lost to a timeout
        (c.SAGA_TIMEOUT, PAYMENT, A, True),
        (c.STOCK_RESERVED, NO_STEP, X, True),  # undoing a step that came in too late
        (c.PAYMENT_CAPTURED, NO_STEP, X, True),
        (c.STOCK_REJECTED, NO_STEP, P, False),  # sold out: the customer's bad luck
        (c.PAYMENT_DECLINED, NO_STEP, A, False),
        (c.PAYMENT_CAPTURED, NO_STEP, A, False),
    ],
)
def test_only_timeouts_and_what_they_leave_to_undo_count_as_sales_lost(
    kind: str, payload: dict, status: str, lost: bool
) -> None:
    decision = saga.decide(kind, status, payload)
    assert decision is not None
    assert saga.lost_to_timeout(kind, decision) is lost


@pytest.mark.parametrize(
    ("lease_s", "backoff_base_s", "backoff_max_s", "floor_s"),
    [
        (3.0, 0.5, 30.0, 10.5),  # the shop's queues: 1.5 x 2 hops x (3 + 0.5)
        (0.5, 0.1, 30.0, 1.8),  # the tests'
        (3.0, 5.0, 1.0, 12.0),  # a backoff capped below its base waits the cap
    ],
)
def test_the_step_timeout_floor_leaves_room_for_a_crashed_lease_on_each_hop(
    lease_s: float, backoff_base_s: float, backoff_max_s: float, floor_s: float
) -> None:
    assert saga.step_timeout_floor(lease_s, backoff_base_s, backoff_max_s) == pytest.approx(floor_s)
