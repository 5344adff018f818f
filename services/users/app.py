"""The users service's HTTP API: register, log in, who am I, and account admin."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from pgcourier import ConfigurationError, Courier
from services.shared import idempotency
from services.shared.auth import Principal
from services.shared.http import (
    Endpoint,
    HTTPError,
    error_response,
    json_response,
    not_found,
    path_uuid,
    principal,
    read_json,
    read_query,
    service_app,
)
from services.shared.metrics import observe
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from . import password_policy, sessions, throttle
from .models import (
    Login,
    Logout,
    Me,
    Refresh,
    Register,
    RoleChange,
    Tokens,
    User,
    UserPage,
    Users,
    normalise_email,
)
from .passwords import hash_password, looks_hashed, verify_password
from .permissions import permissions_for

log = logging.getLogger("users")

_LOGIN_FAILED = "wrong email or password"


async def _fetch_one(request: Request, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    async with (
        request.app.state.courier.pool.connection() as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(query("users", name), params)
        return await cur.fetchone()


async def register(request: Request) -> Response:
    body = await read_json(request, Register)
    if looks_hashed(body.password):
        raise HTTPError(
            422, "validation_error", "send the password itself, not a hash", field="password"
        )
    try:
        password_policy.check(body.password, email=body.email)
    except password_policy.WeakPassword as exc:
        raise HTTPError(422, "weak_password", str(exc), field="password") from None
    key = idempotency.RequestKey.of(request, body)
    params = {"email": body.email, "password_hash": await hash_password(body.password)}
    async with (
        request.app.state.courier.pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        if (first := await key.replay(conn)) is not None:
            return first
        await cur.execute(query("users", "account_insert"), {**params, "role": "customer"})
        row = await cur.fetchone()
        if row is None:
            raise HTTPError(409, "conflict", "an account with this email already exists")
        return await key.answer(conn, User.model_validate(row), status=201)


async def login(request: Request) -> Response:
    body = await read_json(request, Login)
    email = body.email
    courier: Courier = request.app.state.courier
    address = request.client.host if request.client is not None else "unknown"
    try:
        await throttle.begin(courier, email=email, address=address)
    except throttle.Throttled as exc:
        return error_response(
            429,
            "too_many_attempts",
            f"{exc}; try again in {exc.retry_after_s} seconds",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    row = await _fetch_one(request, "account_by_email", {"email": email})
    stored = row["password_hash"] if row is not None else None
    if not await verify_password(stored, body.password) or row is None:
        raise HTTPError(401, "unauthorized", _LOGIN_FAILED)
    await throttle.succeeded(courier, email=email)
    who = Principal(str(row["user_id"]), row["role"], row["token_version"])
    async with request.app.state.courier.pool.connection() as conn, conn.transaction():
        answer = await sessions.session_start(conn, request.app.state.settings, who)
    return sessions.token_response(answer)


async def me(request: Request) -> Response:
    who = principal(request)
    try:
        user_id = uuid.UUID(who.user_id)
    except ValueError:
        raise not_found("user") from None
    row = await _fetch_one(request, "account_get", {"user_id": user_id})
    if row is None:
        raise not_found("user")
    # The stored role, not the token's: it may have changed since the token was issued.
    return json_response(Me.model_validate({**row, "permissions": permissions_for(row["role"])}))


async def user_list(request: Request) -> Response:
    params = read_query(request, UserPage).model_dump()
    async with (
        request.app.state.courier.pool.connection() as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(query("users", "account_list"), params)
        rows = await cur.fetchall()
    return json_response(Users.model_validate({"users": rows}))


async def user_get(request: Request) -> Response:
    user_id = path_uuid(request, "user_id", "user")
    who = principal(request)
    # Someone else's account does not exist, as far as a customer can tell.
    if not who.is_admin and who.user_id != str(user_id):
        raise not_found("user")
    row = await _fetch_one(request, "account_get", {"user_id": user_id})
    if row is None:
        raise not_found("user")
    return json_response(User.model_validate(row))


async def user_role_set(request: Request) -> Response:
    user_id = path_uuid(request, "user_id", "user")
    body = await read_json(request, RoleChange)
    courier: Courier = request.app.state.courier
    async with (
        courier.pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        params = {"user_id": user_id, "role": body.role}
        await cur.execute(query("users", "account_role_update"), params)
        row = await cur.fetchone()
        if row is None:
            await cur.execute(query("users", "account_get"), {"user_id": user_id})
            if await cur.fetchone() is None:
                raise not_found("user")
            raise HTTPError(409, "conflict", "cannot demote the last admin")
        # Tokens issued with the old role are refused everywhere; a refresh gets the new.
        await sessions.user_changed(
            courier, conn, user_id=str(user_id), token_version=row["token_version"]
        )
    return json_response(User.model_validate(row))


async def user_delete(request: Request) -> Response:
    user_id = path_uuid(request, "user_id", "user")
    courier: Courier = request.app.state.courier
    async with courier.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query("users", "account_delete"), {"user_id": user_id})
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute(query("users", "account_get"), {"user_id": user_id})
            if await cur.fetchone() is None:
                raise not_found("user")
            raise HTTPError(409, "conflict", "cannot delete the last admin")
        # Its refresh tokens went with it; its access tokens are refused everywhere.
        await sessions.user_changed(
            courier, conn, user_id=str(user_id), token_version=row[1] + 1, deleted=True
        )
    return Response(status_code=204)


async def admin_ensure(courier: Courier, settings: ServiceSettings) -> None:
    """Creates the configured first admin unless an account with that email exists."""
    if not settings.admin_email or not settings.admin_password:
        if settings.admin_email or settings.admin_password:
            log.warning("set both SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to create an admin")
        return
    email = normalise_email(settings.admin_email)
    async with courier.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("users", "account_by_email"), {"email": email})
        found = await cur.fetchone()
    if found is not None:
        # An existing account keeps its role and password: promoting one somebody
        # registered under that email would hand them the admin rights.
        if found["role"] != "admin":
            log.warning("configured admin %s exists as a %s; not promoted", email, found["role"])
        return
    params = {
        "email": email,
        "password_hash": await hash_password(settings.admin_password),
        "role": "admin",
    }
    async with courier.pool.connection() as conn:
        # ON CONFLICT DO NOTHING: another process starting now may have won the race.
        await conn.execute(query("users", "account_insert"), params)


def create_app(settings: ServiceSettings) -> Starlette:
    endpoints = [
        Endpoint(
            "POST",
            "/users/register",
            register,
            "Create a customer account (retry safely with an Idempotency-Key)",
            access="public",
            body=Register,
            response=User,
            success=201,
            errors={409: "an account with this email already exists"},
            idempotent=True,
        ),
        Endpoint(
            "POST",
            "/users/login",
            login,
            "Exchange email and password for an access token and a refresh token",
            access="public",
            body=Login,
            response=Tokens,
            errors={
                401: "wrong email or password",
                429: "too many failed attempts for this account or from this address",
            },
        ),
        Endpoint(
            "POST",
            "/users/refresh",
            sessions.refresh,
            "Exchange a refresh token for a new access token and refresh token",
            access="public",
            body=Refresh,
            response=Tokens,
            errors={401: "invalid or expired refresh token"},
        ),
        Endpoint(
            "POST",
            "/users/logout",
            sessions.logout,
            "Revoke a refresh token (everywhere: every session and access token)",
            access="public",
            body=Logout,
            success=204,
            errors={401: "everywhere, with a refresh token that is not live"},
        ),
        Endpoint(
            "GET",
            "/users/me",
            me,
            "The caller's account and permissions",
            response=Me,
            errors={404: "the account no longer exists"},
        ),
        Endpoint(
            "GET",
            "/users",
            user_list,
            "All accounts, oldest first",
            access="admin",
            query=UserPage,
            response=Users,
        ),
        Endpoint(
            "GET", "/users/{user_id}", user_get, "One account (admin, or yourself)", response=User
        ),
        Endpoint(
            "PUT",
            "/users/{user_id}/role",
            user_role_set,
            "Change an account's role",
            access="admin",
            body=RoleChange,
            response=User,
            errors={409: "cannot demote the last admin"},
        ),
        Endpoint(
            "DELETE",
            "/users/{user_id}",
            user_delete,
            "Delete an account",
            access="admin",
            success=204,
            errors={409: "cannot delete the last admin"},
        ),
    ]
    if settings.signing_key is None:
        raise ConfigurationError("the users service needs its token signing key")

    async def startup(courier: Courier) -> None:
        await admin_ensure(courier, settings)

    return observe(service_app(settings, endpoints, on_startup=startup))
