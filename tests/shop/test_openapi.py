"""Each service's /openapi.json is a valid OpenAPI 3.1 document, and the server answers
as it says: its schemas validate the real answers, its path ids are the server's, and
a request with several bad fields is told about every one of them at once."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from services.orders.app import create_app as orders_app
from services.payments.app import create_app as payments_app
from services.products.app import create_app as products_app
from services.shared.settings import ServiceSettings
from services.users.app import create_app as users_app
from tests.shop.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, serve_app, token_for

ADMIN = token_for(str(uuid.uuid4()), "admin")
CUSTOMER = token_for(str(uuid.uuid4()))
APPS = {
    "users": users_app,
    "products": products_app,
    "orders": orders_app,
    "payments": payments_app,
}
UNDOCUMENTED = {"/health", "/metrics", "/openapi.json"}


class Service:
    def __init__(self, client: httpx.AsyncClient, routes: list[Route], spec: dict[str, Any]):
        self.client, self.routes, self.spec = client, routes, spec

    async def check(
        self, method: str, path: str, template: str, status: int, **request: Any
    ) -> httpx.Response:
        """The answer, asserted to have status and a body its documented schema takes."""
        response = await self.client.request(method, path, **request)
        assert response.status_code == status, (method, path, response.text)
        answer = self.spec["paths"][template][method.lower()]["responses"][str(status)]
        if "content" not in answer:
            assert response.content == b""
            return response
        schema = answer["content"]["application/json"]["schema"]
        # The document's own components, so that its $refs resolve.
        jsonschema.Draft202012Validator(
            {**schema, "components": self.spec["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        ).validate(response.json())
        return response


@pytest.fixture
async def services(
    settings_for: Callable[[str], ServiceSettings],
) -> AsyncIterator[dict[str, Service]]:
    async with contextlib.AsyncExitStack() as stack:
        found = {}
        for name, create in APPS.items():
            app = create(settings_for(name))
            client = await stack.enter_async_context(serve_app(app))
            spec = (await client.get("/openapi.json")).json()
            routes = [r for r in app.routes if isinstance(r, Route) and r.path not in UNDOCUMENTED]
            found[name] = Service(client, routes, spec)
        yield found


async def test_every_services_document_is_valid_openapi_3_1(services) -> None:
    for name, service in services.items():
        validate(service.spec)  # raises on the first fault
        assert service.spec["openapi"] == "3.1.0", name


async def test_every_route_is_documented_with_its_ids_errors_and_answer(services) -> None:
    for service in services.values():
        for route in service.routes:
            for method in route.methods or ():
                if method == "HEAD":
                    continue
                op = service.spec["paths"][route.path][method.lower()]
                in_path = [p for p in op.get("parameters", ()) if p["in"] == "path"]
                assert [p["name"] for p in in_path] == re.findall(r"\{(\w+)\}", route.path)
                for parameter in in_path:
                    assert parameter["schema"] == {"type": "string", "format": "uuid"}
                    assert "404" in op["responses"]
                responses = op["responses"]
                assert {"422", "503"} <= set(responses), (method, route.path)
                if "security" in op:
                    assert "401" in responses
                if "requestBody" in op:
                    assert {"400", "413", "415"} <= set(responses)
                for status, answer in responses.items():
                    if status.startswith("2"):
                        assert ("content" in answer) == (status != "204"), (route.path, status)
                    else:
                        schema = answer["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/ErrorBody"}


async def test_answers_and_errors_match_their_documented_schemas(services) -> None:
    users, products = services["users"], services["products"]
    orders, payments = services["orders"], services["payments"]
    login = await users.check(
        "POST",
        "/users/login",
        "/users/login",
        200,
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    )
    admin = {"Authorization": f"Bearer {login.json()['token']}"}
    me = await users.check("GET", "/users/me", "/users/me", 200, headers=admin)
    await users.check("GET", "/users?limit=5", "/users", 200, headers=admin)
    await users.check("GET", "/users", "/users", 403, headers=CUSTOMER)
    await users.check("GET", "/users", "/users", 401)
    user_path = f"/users/{me.json()['user_id']}"
    await users.check("GET", user_path, "/users/{user_id}", 200, headers=admin)

    product = {"name": "Lamp", "category": "home", "price_cents": 4200, "stock": 3}
    created = await products.check(
        "POST", "/products", "/products", 201, json=product, headers=ADMIN
    )
    product_id = created.json()["product_id"]
    await products.check("GET", "/products?category=home", "/products", 200, headers=ADMIN)
    await products.check("GET", "/categories", "/categories", 200, headers=CUSTOMER)
    stock_path = f"/products/{product_id}/stock"
    template = "/products/{product_id}/stock"
    await products.check("POST", stock_path, template, 200, json={"delta": 2}, headers=ADMIN)
    await products.check("POST", stock_path, template, 409, json={"delta": -9}, headers=ADMIN)
    await products.check(
        "POST", stock_path, template, 415, content=b"{}", headers={**ADMIN, "content-type": ""}
    )
    await products.check(
        "POST",
        stock_path,
        template,
        400,
        content=b"{",
        headers={**ADMIN, "content-type": "application/json"},
    )

    await orders.check("GET", "/orders", "/orders", 200, headers=CUSTOMER)
    await orders.check("GET", "/orders?limit=0", "/orders", 422, headers=CUSTOMER)
    missing = f"/orders/{uuid.uuid4()}"
    await orders.check("GET", missing, "/orders/{order_id}", 404, headers=CUSTOMER)
    await payments.check("GET", "/payments/summary", "/payments/summary", 200, headers=ADMIN)
    for service in services.values():
        # No worker runs here: degraded, with its consumer's figures and the reasons.
        health = await service.check("GET", "/health", "/health", 200)
        assert health.json()["status"] in ("ok", "degraded")
        metrics = await service.client.get("/metrics")
        documented = service.spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].split(";")[0] in documented
    await payments.check(
        "GET", f"{missing}/payments", "/orders/{order_id}/payments", 404, headers=ADMIN
    )


async def test_a_body_with_several_bad_fields_gets_every_error_at_once(services) -> None:
    bad = {"name": "  ", "category": 3, "price_cents": -1, "colour": "red", "stock": True}
    response = await services["products"].check(
        "POST", "/products", "/products", 422, json=bad, headers=ADMIN
    )
    body = response.json()
    fields = [e["field"] for e in body["errors"]]
    assert sorted(fields) == ["category", "colour", "name", "price_cents", "stock"]
    # The fields a client read before errors existed: the first error's.
    assert (body["field"], body["message"]) == (fields[0], body["errors"][0]["message"])
    assert body["error"] == "validation_error"


async def test_nested_bad_fields_are_each_named_by_their_path(services) -> None:
    lines = [
        {"product_id": str(uuid.uuid4()), "quantity": 0},
        {"product_id": "pen", "quantity": 1},
        {"product_id": str(uuid.uuid4()), "quantity": 1, "price": 1},
    ]
    response = await services["orders"].check(
        "POST", "/orders", "/orders", 422, json={"lines": lines, "card_token": ""}, headers=CUSTOMER
    )
    assert {e["field"] for e in response.json()["errors"]} == {
        "lines[0].quantity",
        "lines[1].product_id",
        "lines[2].price",
        "card_token",
    }


async def test_values_postgres_cannot_store_are_named_beside_the_other_errors(services) -> None:
    response = await services["users"].client.post(
        "/users/register",
        content=b'{"email": "a\\u0000@example.com", "password": 7, "extra": 1e400}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert errors.keys() == {"email", "password", "extra"}
    assert "NUL" in errors["email"] and "too large" in errors["extra"]


async def test_several_bad_query_parameters_are_each_named(services) -> None:
    response = await services["users"].check(
        "GET", "/users?limit=0&offset=%C2%B2", "/users", 422, headers=ADMIN
    )
    assert [e["field"] for e in response.json()["errors"]] == ["limit", "offset"]


async def test_only_the_documented_uuid_form_names_a_product(services) -> None:
    products = services["products"]
    created = await products.client.post(
        "/products", json={"name": "Cup", "category": "home", "price_cents": 300}, headers=ADMIN
    )
    product_id = uuid.UUID(created.json()["product_id"])
    for spelling in (str(product_id), str(product_id).upper()):
        found = await products.client.get(f"/products/{spelling}", headers=ADMIN)
        assert found.status_code == 200, spelling
    # Forms uuid.UUID() takes but format uuid does not: the server refuses them too.
    for spelling in (product_id.hex, f"{{{product_id}}}", product_id.urn):
        refused = await products.client.get(f"/products/{spelling}", headers=ADMIN)
        assert refused.status_code == 404, spelling
        assert refused.json()["error"] == "not_found"


async def test_an_order_line_product_id_must_be_a_uuid_as_documented(services) -> None:
    orders = services["orders"]
    schema = orders.spec["components"]["schemas"]["NewLine"]["properties"]["product_id"]
    assert schema["format"] == "uuid"
    line = {"product_id": uuid.uuid4().hex, "quantity": 1}
    response = await orders.client.post(
        "/orders", json={"lines": [line], "card_token": "tok_visa"}, headers=CUSTOMER
    )
    assert response.status_code == 422
    assert response.json()["field"] == "lines[0].product_id"
