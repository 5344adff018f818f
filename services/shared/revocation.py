"""Tokens refused before they expire: demoted, deleted or logged-out-everywhere users.

The users service raises an account's token version on each such change and publishes
user.changed; every other service's worker records it in its own schema's
token_revocation table, and the auth guard looks the caller up there (by primary key,
remembered for settings.revocation_cache_s). Nobody calls the users service per request.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from starlette.applications import Starlette

from pgcourier import Context, Handler, Message, Worker

from .auth import AuthError, Principal
from .contracts import CONSUMERS, CONTRACTS, USER_CHANGED, InvalidPayload
from .roles import role_name
from .sql import table_query

# Past this many remembered users the cache starts over rather than grow without end.
_CACHE_MAX = 10_000


def _table(service: str) -> tuple[str, str]:
    return (service, "token_revocation")


async def revocation_apply(
    conn: psycopg.AsyncConnection, service: str, *, user_id: str, min_version: int, deleted: bool
) -> None:
    params = {"user_id": user_id, "min_version": min_version, "deleted": deleted}
    await conn.execute(table_query("shop", "token_revocation_apply", _table(service)), params)


async def revocation_check(app: Starlette, who: Principal) -> None:
    """Raises AuthError if the token was revoked after it was issued."""
    settings = app.state.settings
    cache: dict[str, tuple[float, int, bool]] = getattr(app.state, "token_revocations", None) or {}
    app.state.token_revocations = cache
    now = time.monotonic()
    found = cache.get(who.user_id)
    if found is None or found[0] <= now:
        async with app.state.courier.pool.connection() as conn:
            cur = await conn.execute(
                table_query("shop", "token_revocation_get", _table(settings.service)),
                {"user_id": who.user_id},
            )
            row = await cur.fetchone()
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        found = (now + settings.revocation_cache_s, *(row or (0, False)))
        cache[who.user_id] = found
    _, min_version, deleted = found
    if deleted:
        raise AuthError("the account was deleted")
    if who.version < min_version:
        raise AuthError("token revoked: sign in again or refresh it")


def user_changed_payload(message: Message) -> dict[str, Any]:
    p = message.payload
    if not isinstance(p, dict):
        raise InvalidPayload("user.changed payload is not an object")
    user_id, version, deleted = p.get("user_id"), p.get("token_version"), p.get("deleted")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= 200:
        raise InvalidPayload(f"user.changed user_id {user_id!r} is not an id")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidPayload(f"user.changed token_version {version!r} is not a positive integer")
    if not isinstance(deleted, bool):
        raise InvalidPayload("user.changed deleted must be a boolean")
    return {"user_id": user_id, "min_version": version, "deleted": deleted}


def user_changed_handler(service: str) -> Handler:
    """The worker's handler of user.changed, for the service's own table (transactional)."""

    async def on_user_changed(message: Message, ctx: Context) -> None:
        assert ctx.conn is not None, "register the user.changed handler as transactional"
        await revocation_apply(ctx.conn, service, **user_changed_payload(message))

    return on_user_changed


def handle_user_changed(worker: Worker, service: str) -> None:
    """Registers the handler on the service's inbox. An event from any role but the one
    its contract names (users; Postgres stamps the sender) is dead-lettered unapplied."""
    (queue,) = (q for q, consumer in CONSUMERS.items() if consumer == service)
    (sender,) = {c.sender for c in CONTRACTS if c.type == USER_CHANGED and c.queue == queue}
    worker.handle(
        queue,
        user_changed_handler(service),
        type=USER_CHANGED,
        transactional=True,
        senders={role_name(sender)},
    )
