"""Customers placing orders as real clients do: a retried request keeps its Idempotency-Key.

A 5xx or a lost connection says nothing about whether the order was created, so the
client sends the same body with the same key again until it gets an answer; the shop
must then return the first answer rather than create a second order.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

GOOD_CARD = "tok_visa"
DECLINED_CARD = "tok_decline"
SILENT_CARD = "tok_timeout"  # the provider never answers: the saga's payment step times out


@dataclass(frozen=True)
class Mix:
    """What the customers order: most lines are for plentiful products, some for scarce ones."""

    plentiful: list[str]
    scarce: list[str]
    scarce_share: float = 0.2
    declined_share: float = 0.1
    silent_share: float = 0.05

    def order(self, rng: random.Random) -> dict[str, Any]:
        roll = rng.random()
        card = (
            DECLINED_CARD
            if roll < self.declined_share
            else SILENT_CARD
            if roll < self.declined_share + self.silent_share
            else GOOD_CARD
        )
        products = set()
        for _ in range(rng.choice((1, 1, 2))):
            pool = self.scarce if rng.random() < self.scarce_share else self.plentiful
            products.add(rng.choice(pool))
        lines = [{"product_id": p, "quantity": rng.randint(1, 3)} for p in sorted(products)]
        return {"lines": lines, "card_token": card}


@dataclass
class Placed:
    key: str
    card: str
    order_id: str | None = None  # None: no answer before the client gave up
    order_ids_seen: set[str] = field(default_factory=set)  # every 202's order id for the key
    attempts: int = 0
    refused: int | None = None  # a 4xx status, which no order of this suite should get


@dataclass
class ClientStats:
    placed: list[Placed] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, retries included
    lost_connections: int = 0
    retries: int = 0
    replayed: int = 0  # answers the shop gave again from an Idempotency-Key
    server_errors: list[str] = field(default_factory=list)  # 500s: what they said

    @property
    def accepted(self) -> list[Placed]:
        return [p for p in self.placed if p.order_id is not None]

    @property
    def abandoned(self) -> list[Placed]:
        return [p for p in self.placed if p.order_id is None and p.refused is None]


def _retry_after(r: httpx.Response, attempt: int) -> float:
    backoff = min(0.1 * 2**attempt, 2.0)
    raw = r.headers.get("Retry-After", "")
    try:
        return min(max(float(raw), 0.05), 2.0)
    except ValueError:
        return backoff


async def place_until_answered(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    body: dict[str, Any],
    stats: ClientStats,
    *,
    give_up_s: float,
) -> Placed:
    placed = Placed(key=str(uuid.uuid4()), card=body["card_token"])
    stats.placed.append(placed)
    started = time.monotonic()
    while True:
        placed.attempts += 1
        if placed.attempts > 1:
            stats.retries += 1
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": placed.key}
        try:
            r = await http.post(url, headers=headers, json=body)
        except httpx.TransportError:
            stats.lost_connections += 1
            pause = min(0.1 * 2 ** min(placed.attempts, 5), 2.0)
        else:
            stats.statuses[r.status_code] += 1
            if r.headers.get("Idempotent-Replayed") == "true":
                stats.replayed += 1
            if r.status_code == 202:
                placed.order_id = r.json()["order_id"]
                placed.order_ids_seen.add(placed.order_id)
                return placed
            if r.status_code == 500:
                stats.server_errors.append(r.text[:200])
            if r.status_code < 500:
                placed.refused = r.status_code
                return placed
            pause = _retry_after(r, placed.attempts)
        if time.monotonic() - started > give_up_s:
            return placed
        await asyncio.sleep(pause)


FINAL = ("confirmed", "cancelled")


async def wait_final(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    stats: ClientStats,
    *,
    until: float,
    poll_s: float = 0.2,
) -> None:
    """Follows the order until it is final, as a customer checking on it would; so each
    customer has one saga in progress at a time, and the load adapts to what the shop
    can do instead of piling up sagas faster than they finish."""
    while time.monotonic() < until:
        try:
            r = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError:
            stats.lost_connections += 1
        else:
            stats.statuses[r.status_code] += 1
            if r.status_code == 500:
                stats.server_errors.append(r.text[:200])
            if r.status_code == 200 and r.json()["status"] in FINAL:
                return
        await asyncio.sleep(poll_s)


async def customer(
    http: httpx.AsyncClient,
    orders_url: str,
    token: str,
    mix: Mix,
    stats: ClientStats,
    rng: random.Random,
    *,
    until: float,
    give_up_s: float,
) -> None:
    """Places an order, follows it until final, and again until `until` (monotonic)."""
    while time.monotonic() < until:
        placed = await place_until_answered(
            http, orders_url, token, mix.order(rng), stats, give_up_s=give_up_s
        )
        if placed.order_id is not None:
            await wait_final(http, f"{orders_url}/{placed.order_id}", token, stats, until=until)


async def run_customers(
    orders_url: str,
    tokens: list[str],
    mix: Mix,
    stats: ClientStats,
    *,
    seconds: float,
    seed: int,
    give_up_s: float = 90.0,
) -> None:
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=15, limits=limits) as http:
        await asyncio.gather(
            *(
                customer(
                    http,
                    f"{orders_url}/orders",
                    token,
                    mix,
                    stats,
                    random.Random(seed * 1000 + i),
                    until=until,
                    give_up_s=give_up_s,
                )
                for i, token in enumerate(tokens)
            )
        )
