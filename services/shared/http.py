"""HTTP plumbing shared by the services: endpoints, JSON errors, auth, OpenAPI, health."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pgcourier import Courier

from .auth import AuthError, Principal, token_verify
from .settings import ServiceSettings
from .validation import Schema, ValidationError


class HTTPError(Exception):
    def __init__(self, status: int, error: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field


def error_response(status: int, error: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def not_found(what: str) -> HTTPError:
    return HTTPError(404, "not_found", f"{what} not found")


def path_uuid(request: Request, name: str, what: str) -> uuid.UUID:
    """A UUID path parameter. Anything else cannot name a `what`: 404, not a database error."""
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise not_found(what) from None


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """A route with what /openapi.json says about it. access: public, user or admin."""

    method: str
    path: str
    handler: Handler
    summary: str
    access: str = "user"
    body: Schema | None = None
    success: int = 200


def principal(request: Request) -> Principal:
    return request.state.principal


async def read_json(request: Request, schema: Schema) -> dict[str, Any]:
    """The validated body; 413 over the size limit, 415 if not JSON, 422 naming the field."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body_too_large", f"request body is over {limit} bytes")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise HTTPError(415, "unsupported_media_type", "send the body as application/json")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body_too_large", f"request body is over {limit} bytes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "malformed_json", "request body is not valid JSON") from None
    try:
        return schema.validate(data)
    except ValidationError as exc:
        raise HTTPError(422, "validation_error", exc.message, field=exc.field) from None


def _guard(endpoint: Endpoint) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            if endpoint.access != "public":
                header = request.headers.get("authorization", "")
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise HTTPError(401, "unauthorized", "a bearer token is required")
                try:
                    who = token_verify(token, secret=request.app.state.settings.jwt_secret)
                except AuthError as exc:
                    raise HTTPError(401, "unauthorized", f"invalid token: {exc}") from None
                if endpoint.access == "admin" and not who.is_admin:
                    raise HTTPError(403, "forbidden", "admins only")
                request.state.principal = who
            return await endpoint.handler(request)
        except HTTPError as exc:
            return error_response(exc.status, exc.error, exc.message, exc.field)

    return guarded


def openapi(title: str, endpoints: list[Endpoint]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "responses": {str(e.success): {"description": "success"}},
        }
        if e.access != "public":
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = {"description": "missing or invalid token"}
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": e.body.openapi()}},
            }
            op["responses"]["422"] = {"description": "invalid field"}
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1.0.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        },
    }


def service_app(
    settings: ServiceSettings,
    endpoints: list[Endpoint],
    *,
    on_startup: Callable[[Courier], Awaitable[None]] | None = None,
) -> Starlette:
    """A service's Starlette app, holding a Courier whose pool is the service role's."""
    spec = openapi(f"{settings.service} service", endpoints)

    async def health(request: Request) -> Response:
        try:
            async with request.app.state.courier.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "service": settings.service})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(spec)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, "http_error", str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, psycopg.OperationalError):
            return error_response(503, "unavailable", "the database is unavailable")
        return error_response(500, "internal_error", "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Courier(settings.database_url, pool_max_size=10) as courier:
            app.state.courier = courier
            if on_startup is not None:
                await on_startup(courier)
            yield

    routes = [Route("/health", health), Route("/openapi.json", openapi_json)]
    routes += [Route(e.path, _guard(e), methods=[e.method]) for e in endpoints]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.settings = settings
    return app
