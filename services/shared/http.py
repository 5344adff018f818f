"""HTTP plumbing shared by the services: endpoints, JSON errors, auth, input, health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgcourier import Admin, Courier, DatabaseError

from . import idempotency, openapi
from .auth import AuthError, Principal, token_verify
from .errors import FieldError, HTTPError
from .models import ErrorBody, FieldProblem, uuid_from_text
from .revocation import revocation_check
from .settings import ServiceSettings
from .validation import text_problem, validated_body, validated_query

__all__ = [
    "Endpoint",
    "HTTPError",
    "json_response",
    "not_found",
    "parse_json",
    "path_uuid",
    "principal",
    "read_json",
    "read_query",
]

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("services.http")

# /health says degraded when no worker of the service beat within this many seconds
# (workers beat every 5 s), or when a ready message has waited longer than this.
HEALTH_CONSUMER_ALIVE_S = 15.0
HEALTH_OLDEST_READY_S = 30.0

# How long a client should wait before retrying while the database is unreachable:
# a Postgres restart takes about a second, and the pool reconnects on its own.
RETRY_AFTER_S = 1


def error_response(
    status: int,
    error: str,
    message: str,
    field: str | None = None,
    *,
    errors: tuple[FieldError, ...] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(
        error=error,
        message=message,
        field=field,
        errors=[FieldProblem(field=e.field, message=e.message) for e in errors] or None,
    )
    return json_response(body, status=status, headers=headers, exclude_none=True)


def json_response(
    body: BaseModel,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    exclude_none: bool = False,
) -> Response:
    """body as JSON, serialised once, straight from the model."""
    return Response(
        body.model_dump_json(exclude_none=exclude_none),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def database_unavailable(exc: BaseException) -> bool:
    """Whether exc says the database cannot be reached right now (a retry may succeed).

    Driver errors reach here bare (psycopg.OperationalError: refused connections,
    terminated backends, a connection lost inside a transaction; psycopg_pool's
    PoolTimeout and PoolClosed derive from it) or wrapped by pgcourier (DatabaseError,
    the driver's error as its __cause__). A connection that broke earlier in the same
    request can surface later as an InterfaceError ("the connection is closed/lost").
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg.OperationalError):
            return True
        if isinstance(current, psycopg.InterfaceError) and _connection_gone(current):
            return True
        if not isinstance(current, DatabaseError | psycopg.Error):
            # Only the driver's and pgcourier's own errors are followed to their causes:
            # an unrelated bug raised while handling a database error stays a 500.
            return False
        current = current.__cause__ or current.__context__
    return False


def _connection_gone(exc: psycopg.InterfaceError) -> bool:
    text = str(exc).lower()
    return "connection is closed" in text or "connection is lost" in text


def unavailable_response() -> Response:
    return error_response(
        503,
        "unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def not_found(what: str) -> HTTPError:
    return HTTPError(404, "not_found", f"{what} not found")


def path_uuid(request: Request, name: str, what: str) -> uuid.UUID:
    """A UUID path parameter, in the form /openapi.json declares (format uuid). Anything
    else cannot name a `what`: 404, not a database error."""
    found = uuid_from_text(request.path_params[name])
    if found is None:
        raise not_found(what)
    return found


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """A route and its contract, which /openapi.json documents (services.shared.openapi).

    access: public, user or admin. body, query: the models the handler reads with
    read_json and read_query; response: the model of its success answer (None: no body).
    errors: the error statuses the handler itself answers, with what they mean; those
    that follow from the rest (401, 403, 400/413/415/422 for a body, 404 for a path id,
    503) are documented without being listed here.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    access: str = "user"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    success: int = 200
    errors: Mapping[int, str] = field(default_factory=dict)
    # Accepts an Idempotency-Key header (the handler uses services.shared.idempotency).
    idempotent: bool = False
    # The success answer's Location header names what was created.
    location: bool = False


def principal(request: Request) -> Principal:
    return request.state.principal


# Containers nested deeper than this are refused before parsing: the json module
# recurses per level and a 20,000-deep body would end in RecursionError (a 500).
MAX_JSON_DEPTH = 32
# Decimal digits of the longest integer parse_json converts; longer is out of range of
# every column anyway (a bigint has 19), and int() of thousands of digits is slow.
_MAX_INT_DIGITS = 20
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deep the containers of a JSON text nest (brackets inside strings aside).
    An unterminated string counts its brackets too: it is malformed either way."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _bounded_int(text: str) -> int | float:
    # inf stands for "too large" until check_values names the field that holds it.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return math.inf
    return int(text)


def parse_json(raw: bytes) -> Any:
    """The JSON value; an integer too long to be in range is inf and NaN, Infinity are
    kept, until validation names the fields that hold them.

    HTTPError: 400 if not JSON; 422 if nested over MAX_JSON_DEPTH.
    """
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HTTPError(
            422, "validation_error", f"nests deeper than {MAX_JSON_DEPTH} levels", field="body"
        )
    try:
        data = json.loads(raw, parse_int=_bounded_int, parse_constant=lambda _: math.nan)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPError(400, "malformed_json", "request body is not valid JSON") from None
    return data


def is_json_media_type(content_type: str) -> bool:
    """application/json exactly, with or without parameters (; charset=utf-8); not
    application/jsonx, application/json-seq or text/json."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def read_json(request: Request, model: type[M]) -> M:
    """The body as model; 413 over the size limit, 415 if not JSON, 400 if malformed,
    422 naming every field at fault (NUL, lone surrogates and numbers past a bigint
    anywhere in it included)."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    # Digits counted before int(): a 5,000-digit Content-Length is over any limit.
    declared_over = (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit)
    )
    if declared_over:
        raise HTTPError(413, "body_too_large", f"request body is over {limit} bytes")
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise HTTPError(415, "unsupported_media_type", "send the body as application/json")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body_too_large", f"request body is over {limit} bytes")
        chunks.append(chunk)
    return validated_body(model, parse_json(b"".join(chunks)))


def read_query(request: Request, model: type[M]) -> M:
    """The query parameters as model; 422 naming every one at fault. (Their text was
    checked before the handler ran: see _check_request_text.)"""
    return validated_query(model, request.query_params)


def _check_request_text(request: Request) -> None:
    """422 for a query string or path parameter that Postgres could not store or compare
    (NUL, lone surrogates), before any handler passes it to a query."""
    for name, value in request.query_params.multi_items():
        for text in (name, value):
            if (problem := text_problem(text)) is not None:
                raise HTTPError(422, "validation_error", problem, field=_printable(name))
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            raise HTTPError(422, "validation_error", problem, field=name)


def _printable(name: str) -> str:
    return name if text_problem(name) is None else "query"


# Every endpoint's answer: tokens (login, refresh) and personal data (accounts, orders,
# payments) must not be kept by a browser or a proxy; nothing here is worth caching.
CACHE_CONTROL = "no-store"


def _guard(endpoint: Endpoint) -> Handler:
    async def guarded(request: Request) -> Response:
        response = await _answer(request)
        response.headers.setdefault("Cache-Control", CACHE_CONTROL)
        return response

    async def _answer(request: Request) -> Response:
        try:
            _check_request_text(request)
            if endpoint.access != "public":
                header = request.headers.get("authorization", "")
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise HTTPError(401, "unauthorized", "a bearer token is required")
                try:
                    who = token_verify(token, keys=request.app.state.settings.token_keys)
                    await revocation_check(request.app, who)
                except AuthError as exc:
                    raise HTTPError(401, "unauthorized", f"invalid token: {exc}") from None
                if endpoint.access == "admin" and not who.is_admin:
                    raise HTTPError(403, "forbidden", "admins only")
                request.state.principal = who
            return await endpoint.handler(request)
        except HTTPError as exc:
            return error_response(exc.status, exc.error, exc.message, exc.field, errors=exc.errors)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Answered here rather than by the app's error handler, which would also
            # re-raise it: one line per request, not a traceback, while Postgres restarts.
            log.warning(
                "%s %s: database unavailable, answered 503: %s",
                request.method,
                request.url.path,
                _one_line(exc),
            )
            return unavailable_response()

    return guarded


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def service_app(
    settings: ServiceSettings,
    endpoints: list[Endpoint],
    *,
    on_startup: Callable[[Courier], Awaitable[None]] | None = None,
    consumes: str | None = None,
) -> Starlette:
    """A service's Starlette app, holding a Courier whose pool is the service role's.

    consumes: the queue the service's workers consume, whose consumers /health watches.
    """
    spec = openapi.document(f"{settings.service} service", endpoints)

    async def health(request: Request) -> Response:
        """ok; degraded (still 200: this process serves) with the reasons when the
        service's queue has no live consumer or its oldest ready message waited too
        long; 503 when the database is unreachable."""
        courier: Courier = request.app.state.courier
        try:
            async with courier.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
                consumer = None
                if consumes is not None:
                    consumer = await Admin(courier).consumer_health(
                        consumes, alive_within_s=HEALTH_CONSUMER_ALIVE_S, conn=conn
                    )
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "service": settings.service, "error": str(exc)},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        body: dict[str, Any] = {"status": "ok", "service": settings.service}
        if consumer is not None:
            reasons = []
            if consumer.live_workers == 0:
                reasons.append(f"no live consumer of {consumes}")
            age = consumer.oldest_ready_age_s
            if age is not None and age > HEALTH_OLDEST_READY_S:
                reasons.append(f"oldest ready message on {consumes} has waited {age:.0f}s")
            body["consumer"] = {
                "queue": consumes,
                "live_workers": consumer.live_workers,
                "last_claim_at": consumer.last_claim_at.isoformat()
                if consumer.last_claim_at
                else None,
                "oldest_ready_age_s": age,
            }
            if reasons:
                body |= {"status": "degraded", "reasons": reasons}
        return JSONResponse(body)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, "http_error", str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):
            return unavailable_response()
        return error_response(500, "internal_error", "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A request waits db_timeout_s for a connection, then gets its 503.
        async with Courier(
            settings.database_url, pool_max_size=10, pool_timeout=settings.db_timeout_s
        ) as courier:
            app.state.courier = courier
            if on_startup is not None:
                await on_startup(courier)
            pruning = None
            if any(e.idempotent for e in endpoints):
                pruning = asyncio.create_task(idempotency.prune_loop(courier, settings.service))
            try:
                yield
            finally:
                if pruning is not None:
                    pruning.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pruning

    routes = [Route("/health", health), Route("/openapi.json", openapi_json)]
    routes += [Route(e.path, _guard(e), methods=[e.method]) for e in endpoints]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.settings = settings
    return app
