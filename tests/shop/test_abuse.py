"""Hostile input on every route of every service: never a 500.

NUL characters, lone surrogates, 20,000-deep JSON, numbers past any column, digits that
are not ASCII and media types that are almost JSON, sent (with an admin's token, so
that every route gets as far as reading its input) to each service's app.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.routing import Route

from services.orders.app import create_app as orders_app
from services.payments.app import create_app as payments_app
from services.products.app import create_app as products_app
from services.shared.errors import HTTPError
from services.shared.http import json_depth, read_query
from services.shared.models import Query, query_int
from services.shared.settings import ServiceSettings
from services.users.app import create_app as users_app
from tests.shop.conftest import serve_app, token_for

ADMIN = token_for(str(uuid.uuid4()), "admin")
APPS = {
    "users": users_app,
    "products": products_app,
    "orders": orders_app,
    "payments": payments_app,
}
HOSTILE_BODIES = {
    "NUL in a string": b'{"email": "a\\u0000@x.io", "name": "a\\u0000", "role": "a\\u0000"}',
    "NUL in a key": b'{"a\\u0000": 1}',
    "lone surrogate": b'{"name": "\\ud800", "email": "\\udfff@x.io"}',
    "20,000 deep": b"[" * 20_000 + b"]" * 20_000,
    "20,000 deep in a field": b'{"lines": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "5,000-digit integer": b'{"price_cents": ' + b"9" * 5000 + b', "delta": 1}',
    "integer past a bigint": b'{"delta": 9223372036854775808, "price_cents": 1}',
    "1e400": b'{"delta": 1e400, "quantity": 1e400}',
    "NaN": b'{"delta": NaN}',
    "float for an integer": b'{"delta": 1.0, "price_cents": 2.5}',
}
BAD_MEDIA_TYPES = ["application/jsonx", "application/json-seq", "text/json", "text/plain", ""]
HOSTILE_QUERIES = {
    "limit=²": ("limit=%C2%B2", 422),
    "limit of 5,000 digits": ("limit=" + "9" * 5000, 422),
    "limit=+1": ("limit=%2B1", 422),
    "limit=Arabic-Indic one": ("limit=%D9%A1", 422),
    "NUL in a value": ("category=%00", 422),
    "NUL in a name": ("a%00b=1", 422),
}


@pytest.fixture
async def services(
    settings_for: Callable[[str], ServiceSettings],
) -> AsyncIterator[dict[str, tuple[httpx.AsyncClient, list[Route]]]]:
    async with contextlib.AsyncExitStack() as stack:
        found = {}
        for name, create in APPS.items():
            app = create(settings_for(name))
            client = await stack.enter_async_context(serve_app(app))
            found[name] = (client, [r for r in app.routes if isinstance(r, Route)])
        yield found


def _path(template: str, filler: str) -> str:
    return re.sub(r"\{[^}]+\}", filler, template)


def _routes(services, *, with_body: bool | None = None):
    for client, routes in services.values():
        for route in routes:
            for method in sorted(route.methods or {"GET"}):
                if method == "HEAD":
                    continue
                takes_body = method in {"POST", "PUT", "PATCH"}
                if with_body is None or with_body == takes_body:
                    yield client, method, route.path


async def test_every_route_answers_hostile_bodies_with_a_4xx(services) -> None:
    for client, method, path in _routes(services, with_body=True):
        for name, body in HOSTILE_BODIES.items():
            response = await client.request(
                method,
                _path(path, str(uuid.uuid4())),
                content=body,
                headers={**ADMIN, "content-type": "application/json"},
            )
            assert response.status_code in (400, 422), (method, path, name, response.text)
            assert response.json()["error"]


async def test_every_route_refuses_media_types_that_are_almost_json(services) -> None:
    for client, method, path in _routes(services, with_body=True):
        for media_type in BAD_MEDIA_TYPES:
            response = await client.request(
                method,
                _path(path, str(uuid.uuid4())),
                content=b'{"email": "a@b.io"}',
                headers={**ADMIN, "content-type": media_type},
            )
            assert response.status_code == 415, (method, path, media_type, response.text)


async def test_json_with_parameters_is_still_json(services) -> None:
    client, _ = services["users"]
    response = await client.post(
        "/users/register",
        content=b'{"email": "cy@example.com", "password": "a fine passphrase"}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", list(HOSTILE_QUERIES))
async def test_every_route_answers_hostile_query_strings_without_a_500(services, case: str) -> None:
    query, status = HOSTILE_QUERIES[case]
    for client, method, path in _routes(services):
        url = f"{_path(path, str(uuid.uuid4()))}?{query}"
        response = await client.request(method, url, headers=ADMIN)
        assert response.status_code != 500, (method, path, response.text)
        reads_limit = path in ("/users", "/orders") and method == "GET"
        # /health, /metrics and /openapi.json read no query: anything there is ignored.
        api = path not in ("/health", "/metrics", "/openapi.json")
        if ("NUL" in case and api) or reads_limit:
            assert response.status_code == status, (method, path, response.text)


async def test_every_route_answers_hostile_path_parameters_without_a_500(services) -> None:
    for client, method, path in _routes(services):
        if "{" not in path:
            continue
        for filler in ("%00", "%ED%A0%80", "9" * 5000, "%C2%B2", "..%2F..%2Fetc"):
            response = await client.request(
                method,
                _path(path, filler),
                json={},
                headers=ADMIN,
            )
            assert response.status_code in (404, 422), (method, path, filler, response.text)


async def test_every_route_answers_no_store(services) -> None:
    for client, method, path in _routes(services):
        if path in ("/health", "/metrics", "/openapi.json"):  # no token, no secret
            continue
        response = await client.request(method, _path(path, str(uuid.uuid4())), headers=ADMIN)
        assert response.headers.get("Cache-Control") == "no-store", (method, path)


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": "\\"]"}]}') == 3
    assert json_depth(b"[" * 40) == 40
    assert json_depth(b'"[[["') == 0


def test_only_ascii_digits_make_a_numeric_query_parameter() -> None:
    class FakeRequest:
        def __init__(self, value: str) -> None:
            self.query_params = {"n": value}

    class N(Query):
        n: query_int(0, 100) = 1  # type: ignore[valid-type]

    for raw in ("²", "\u0661", "+1", " 1", "1_0", "-1", "1.0", "", "9" * 5000, "101"):
        with pytest.raises(HTTPError, match="integer from 0 to 100") as refused:
            read_query(FakeRequest(raw), N)  # type: ignore[arg-type]
        assert refused.value.field == "n"
    assert read_query(FakeRequest("007"), N).n == 7  # type: ignore[arg-type]
