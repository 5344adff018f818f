"""A fake card provider with fixed, deterministic rules, checked in this order.

1. empty card token          -> declined, reason "card token missing"
2. token "tok_decline"       -> declined, reason "card declined"
3. amount_cents over 100000  -> declined, reason "amount over limit" (1,000.00 is still fine)
4. token "tok_timeout"       -> no answer: the provider never replies (`None`)
5. any other token           -> captured, with a provider reference

The reference is derived from the payment id, which a real provider would take as
the idempotency key of the charge: asking again for the same payment gives the
same answer. A pure function, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

AMOUNT_LIMIT_CENTS = 100_000
DECLINE_TOKEN = "tok_decline"
TIMEOUT_TOKEN = "tok_timeout"


@dataclass(frozen=True, slots=True)
class Captured:
    provider_ref: str


@dataclass(frozen=True, slots=True)
class Declined:
    reason: str


Answer = Captured | Declined


def charge(payment_id: str, amount_cents: int, card_token: str) -> Answer | None:
    """The provider's answer to a charge, or None when it never answers."""
    if not card_token:
        return Declined("card token missing")
    if card_token == DECLINE_TOKEN:
        return Declined("card declined")
    if amount_cents > AMOUNT_LIMIT_CENTS:
        return Declined("amount over limit")
    if card_token == TIMEOUT_TOKEN:
        return None
    digest = hashlib.sha256(payment_id.encode()).hexdigest()[:16]
    return Captured(f"fake_{digest}")
