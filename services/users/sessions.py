"""Sessions: short-lived access tokens, refresh tokens this service can revoke, and the
user.changed events that make every service refuse a revoked user's access tokens.

A refresh token is 32 random bytes, stored only as its SHA-256. Each refresh rotates
it; a rotated token presented again ends its whole chain (someone copied it).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from pgcourier import Courier
from services.shared.auth import Principal, SigningKey, token_issue
from services.shared.contracts import USER_CHANGED
from services.shared.http import HTTPError, json_response, read_json
from services.shared.revocation import revocation_apply
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from .models import Logout, Refresh, Tokens

_REFUSED = "invalid or expired refresh token: sign in again"


def _q(name: str) -> Any:
    return query("users", name)


def _hash(refresh_token: str) -> bytes:
    return hashlib.sha256(refresh_token.encode()).digest()


def _signing_key(settings: ServiceSettings) -> SigningKey:
    assert settings.signing_key is not None, "the users service signs with its own key"
    return settings.signing_key


def token_response(body: Tokens) -> Response:
    # Tokens are credentials: no proxy or browser cache may keep a copy.
    return json_response(body, headers={"Cache-Control": "no-store"})


async def session_start(
    conn: psycopg.AsyncConnection,
    settings: ServiceSettings,
    who: Principal,
    *,
    family_id: uuid.UUID | None = None,
) -> Tokens:
    """An access token for who and a new refresh token (a new chain unless family_id)."""
    refresh_token = secrets.token_urlsafe(32)
    if family_id is None:
        await conn.execute(_q("refresh_token_prune"), {"user_id": who.user_id})
    await conn.execute(
        _q("refresh_token_insert"),
        {
            "token_hash": _hash(refresh_token),
            "user_id": who.user_id,
            "family_id": family_id or uuid.uuid4(),
            "ttl_s": float(settings.refresh_ttl_s),
        },
    )
    return Tokens(
        token=token_issue(who, key=_signing_key(settings), ttl_s=settings.token_ttl_s),
        token_type="bearer",
        expires_in=int(settings.token_ttl_s),
        refresh_token=refresh_token,
        refresh_expires_in=int(settings.refresh_ttl_s),
    )


async def user_changed(
    courier: Courier,
    conn: psycopg.AsyncConnection,
    *,
    user_id: str,
    token_version: int,
    deleted: bool = False,
) -> None:
    """In the caller's transaction: tokens below token_version (all, if deleted) are
    refused here at once and by the other services once they apply the event."""
    await revocation_apply(
        conn, "users", user_id=user_id, min_version=token_version, deleted=deleted
    )
    await courier.publish(
        USER_CHANGED,
        {"user_id": user_id, "token_version": token_version, "deleted": deleted},
        type=USER_CHANGED,
        ordering_key=user_id,
        conn=conn,
    )


async def _lock(conn: psycopg.AsyncConnection, refresh_token: str) -> tuple[Any, ...] | None:
    cur = await conn.execute(_q("refresh_token_lock"), {"token_hash": _hash(refresh_token)})
    return await cur.fetchone()


async def refresh(request: Request) -> Response:
    body = await read_json(request, Refresh)
    settings: ServiceSettings = request.app.state.settings
    answer = None
    async with request.app.state.courier.pool.connection() as conn, conn.transaction():
        row = await _lock(conn, body.refresh_token)
        if row is not None:
            user_id, family_id, rotated, expired, role, version = row
            if rotated or expired:
                await conn.execute(_q("refresh_token_revoke_family"), {"family_id": family_id})
            else:
                await conn.execute(
                    _q("refresh_token_rotate"), {"token_hash": _hash(body.refresh_token)}
                )
                who = Principal(str(user_id), role, version)
                answer = await session_start(conn, settings, who, family_id=family_id)
    # Refused only after the commit: a revoked chain stays revoked.
    if answer is None:
        raise HTTPError(401, "unauthorized", _REFUSED)
    return token_response(answer)


async def logout(request: Request) -> Response:
    """Ends the refresh token's chain; everywhere: every session, and every access token
    the user holds (a new token version), on every service within seconds."""
    body = await read_json(request, Logout)
    courier: Courier = request.app.state.courier
    refused = False
    async with courier.pool.connection() as conn, conn.transaction():
        row = await _lock(conn, body.refresh_token)
        if row is not None:
            user_id, family_id, rotated, expired, _, _ = row
            await conn.execute(_q("refresh_token_revoke_family"), {"family_id": family_id})
            # Only a live token may log its user out everywhere: an old copy must not
            # become a way to sign someone out over and over.
            if body.everywhere and not (rotated or expired):
                await conn.execute(_q("refresh_token_revoke_user"), {"user_id": user_id})
                cur = await conn.execute(_q("account_token_version_bump"), {"user_id": user_id})
                bumped = await cur.fetchone()
                assert bumped is not None, "a deletion waits for the locked token (cascade)"
                await user_changed(courier, conn, user_id=str(user_id), token_version=bumped[0])
            elif body.everywhere:
                refused = True
        elif body.everywhere:
            refused = True
    if refused:
        raise HTTPError(401, "unauthorized", _REFUSED)
    return Response(status_code=204)
