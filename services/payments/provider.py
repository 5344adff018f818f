"""A fake card provider with fixed, deterministic rules, checked in this order.

1. empty card token          -> declined, reason "card token missing"
2. token "tok_decline"       -> declined, reason "card declined"
3. amount_cents over 100000  -> declined, reason "amount over limit" (1,000.00 is still fine)
4. token "tok_timeout"       -> no answer: the provider never replies (`None`), charges nothing
5. any other token           -> captured, with a new provider reference

It stands outside the payments service's database, as a real provider does: its
ledger (`card_provider.charge`) is written on the provider's own connection, each
charge committed before the answer is returned, so a charge stays charged even if
the payments transaction that asked for it rolls back or its worker is killed.
And like a real provider it takes an idempotency key with each charge: a charge
with a key seen before returns the first answer and charges nothing more (the same
key with another amount or card is refused), so a retried handler cannot charge a
card twice, whatever it lost in between.
The ledger keeps no card token: a fingerprint (to tell the same card from another
under one key) and its last four characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass

import psycopg

from services.shared.sql import query

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


class IdempotencyConflict(Exception):
    """The key was used before for a charge with another amount, card or order."""


def decide(amount_cents: int, card_token: str) -> Answer | None:
    """The rules alone: the answer to a first charge, or None when it never answers.
    A capture's reference is made fresh; the ledger keeps the first one per key."""
    if not card_token:
        return Declined("card token missing")
    if card_token == DECLINE_TOKEN:
        return Declined("card declined")
    if amount_cents > AMOUNT_LIMIT_CENTS:
        return Declined("amount over limit")
    if card_token == TIMEOUT_TOKEN:
        return None
    return Captured(f"fake_{secrets.token_hex(8)}")


def card_fingerprint(card_token: str) -> str:
    """What the ledger keeps of a card token instead of the token: enough to tell the same
    card from another under one idempotency key, and nothing to charge a card with."""
    return hashlib.sha256(card_token.encode()).hexdigest()


def charge_key(order_id: str) -> str:
    """The idempotency key of an order's charge: one charge per order, ever, however
    often the command is redelivered or its handler's transaction is lost."""
    return f"charge:{order_id}"


class CardProvider:
    """The provider's client and, being fake, the provider itself: one connection of
    its own (autocommit, opened on first use, reopened after a failure)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection | None = None
        # One call at a time on the one connection, as a client library would queue them.
        self._lock = asyncio.Lock()

    async def charge(
        self, *, idempotency_key: str, order_id: str, amount_cents: int, card_token: str
    ) -> Answer | None:
        """The answer to the charge with this key: the first one's if it was seen before."""
        answer = decide(amount_cents, card_token)
        if answer is None:
            return None
        row = {
            "idempotency_key": idempotency_key,
            "order_id": order_id,
            "amount_cents": amount_cents,
            "card_fingerprint": card_fingerprint(card_token),
            "card_last4": card_token[-4:],
            "outcome": "captured" if isinstance(answer, Captured) else "declined",
            "reason": answer.reason if isinstance(answer, Declined) else None,
            "provider_ref": answer.provider_ref if isinstance(answer, Captured) else None,
        }
        async with self._lock:
            conn = await self._connection()
            try:
                cur = await conn.execute(query("payments", "provider_charge_insert"), row)
                if await cur.fetchone() is not None:
                    return answer
                cur = await conn.execute(query("payments", "provider_charge_get"), row)
                first = await cur.fetchone()
            except psycopg.Error:
                await self.close()
                raise
        assert first is not None, "charges are never deleted"
        order, amount, fingerprint, outcome, reason, provider_ref = first
        if (str(order), amount, fingerprint) != (
            order_id,
            amount_cents,
            card_fingerprint(card_token),
        ):
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was used for another charge"
                f" (order {order}, {amount} cents)"
            )
        return Captured(provider_ref) if outcome == "captured" else Declined(reason)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
