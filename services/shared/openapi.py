"""A service's OpenAPI 3.1 document, generated from its endpoints and their models.

Everything an endpoint declares is documented from the same declaration the server
acts on: the body and query models validate requests, the response model builds the
answer, access decides 401 and 403. The error answers each route can give follow from
those (a body can be malformed, too large, not JSON or invalid; a token missing;
a path id unknown) plus the ones its handler gives itself (Endpoint.errors). /health,
served by every service alike, is documented from models.Health; /metrics (added by
services/shared/metrics.observe) as Prometheus's text format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import idempotency
from .models import ErrorBody, Health

if TYPE_CHECKING:
    from .http import Endpoint

_REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"\{([^}]+)\}")
_UUID = {"type": "string", "format": "uuid"}

ERROR_DESCRIPTIONS = {
    400: "the body is not valid JSON",
    401: "no bearer token, or one that is invalid, expired or revoked",
    403: "admins only",
    404: "not found (or not yours to see)",
    409: "conflicts with the current state",
    413: "the body is over the size limit",
    415: "the body is not sent as application/json",
    422: "invalid input: errors names every field at fault (field and message: the first)",
    429: "too many requests; retry after Retry-After seconds",
    503: "the database is unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def document(title: str, endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    endpoints = list(endpoints)
    refs, schemas = _schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _health(refs)},
        "/metrics": {"get": _METRICS},
    }
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _schemas(
    endpoints: list[Endpoint],
) -> tuple[dict[tuple[Any, JsonSchemaMode], Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (ErrorBody, "serialization"),
        (Health, "serialization"),
    ]
    for e in endpoints:
        if e.body is not None:
            wanted.append((e.body, "validation"))
        if e.response is not None:
            wanted.append((e.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    return dict(refs), defs.get("$defs", {})


def _operation(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": e.summary, "operationId": e.handler.__name__}
    parameters = [
        # Every path parameter of the services is an id, read with http.path_uuid.
        {"name": name, "in": "path", "required": True, "schema": _UUID}
        for name in _PATH_PARAMETER.findall(e.path)
    ]
    if e.query is not None:
        parameters += _query_parameters(e.query)
    if e.idempotent:
        parameters.append(idempotency.OPENAPI_PARAMETER)
    if parameters:
        op["parameters"] = parameters
    if e.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    if e.access != "public":
        op["security"] = [{"bearer": []}]
    op["responses"] = {str(e.success): _success(e, refs)} | _errors(e, refs)
    return op


_METRICS: dict[str, Any] = {
    "summary": "This process's metrics, for Prometheus to scrape (no token needed)",
    "operationId": "metrics",
    "responses": {
        "200": {
            "description": "the Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
}


def _health(refs: dict[Any, Any]) -> dict[str, Any]:
    body = {"application/json": {"schema": refs[(Health, "serialization")]}}
    return {
        "summary": "Whether this process can serve and its queue is being consumed",
        "operationId": "health",
        "responses": {
            "200": {"description": "ok, or degraded with the reasons", "content": body},
            "503": {
                "description": ERROR_DESCRIPTIONS[503],
                "content": body,
                "headers": _RETRY_AFTER,
            },
        },
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        # A parameter left out is absent, never null: "X or null" is documented as X.
        variants = [v for v in prop.get("anyOf", ()) if v != {"type": "null"}]
        if len(variants) == 1:
            prop = {k: v for k, v in prop.items() if k != "anyOf"} | variants[0]
        if prop.get("default", 0) is None:
            prop = {k: v for k, v in prop.items() if k != "default"}
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _success(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": e.summary}
    if e.response is not None:
        schema = refs[(e.response, "serialization")]
        answer["content"] = {"application/json": {"schema": schema}}
    if e.location:
        answer["headers"] = {
            "Location": {
                "description": "the path of what was created, to read it with GET",
                "schema": {"type": "string"},
            }
        }
    return answer


def _errors(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    descriptions = dict(ERROR_DESCRIPTIONS)
    # Any route refuses a query or path text that Postgres could not hold (a NUL).
    statuses = {422, 503} | set(e.errors)
    if e.access != "public":
        statuses.add(401)
    if e.access == "admin":
        statuses.add(403)
    if e.body is not None:
        statuses |= {400, 413, 415}
    if _PATH_PARAMETER.search(e.path):
        statuses.add(404)
        descriptions[404] = "no such id (or not yours to see), or the id is not a uuid"
    if e.idempotent:
        descriptions[422] += "; or an Idempotency-Key already used for a different request"
    descriptions |= e.errors
    body = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    answers: dict[str, Any] = {}
    for status in sorted(statuses):
        answers[str(status)] = {"description": descriptions[status], "content": body}
        if status in (429, 503):
            answers[str(status)]["headers"] = _RETRY_AFTER
    return answers
