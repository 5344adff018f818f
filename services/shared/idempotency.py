"""Idempotency-Key on creating requests: a retry gets the first answer, nothing new.

A handler that creates something takes the key in the same transaction as the
creation (`replay` first, `answer` last):

    key = idempotency.RequestKey.of(request, body)
    async with pool.connection() as conn, conn.transaction():
        if (first := await key.replay(conn)) is not None:
            return first
        ...create...
        return await key.answer(conn, {"id": ...}, status=201)

So the key is recorded iff the creation commits: a client whose request committed
but whose answer was lost (a 503, a dropped connection) finds it on retry. Keys are
per caller (the token's user, or "anonymous" on public endpoints) and per service,
in that service's own schema (`<service>.idempotency_key`). Only successful answers
are kept: an error rolls the transaction back, and the retry is handled afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgcourier import Courier

from .errors import HTTPError
from .sql import table_query

log = logging.getLogger("services.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 200
# Printable ASCII: what fits in a header unmangled (a UUID is the usual choice).
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
ANONYMOUS = "anonymous"
RETENTION_S = 24 * 3600.0
PRUNE_INTERVAL_S = 600.0
PRUNE_BATCH = 1000

OPENAPI_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: a request with the key of an earlier successful one (same"
        " caller, same method, path and body) gets that first answer again, with header"
        f" {REPLAYED_HEADER}: true, and creates nothing new; the same key with a"
        " different request is refused with 422. Kept for 24 hours."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}


def _table(service: str) -> tuple[str, str]:
    return (service, "idempotency_key")


@dataclass(frozen=True, slots=True)
class RequestKey:
    """One request's key (None: the client sent none, and nothing is recorded)."""

    service: str
    caller: str
    key: str | None
    request_hash: str

    @classmethod
    def of(cls, request: Request, body: Any, *, caller: str | None = None) -> RequestKey:
        """The request's Idempotency-Key, checked (422 naming the header if unusable)."""
        key = request.headers.get(HEADER)
        if key is not None and not _KEY.fullmatch(key):
            raise HTTPError(
                422,
                "validation_error",
                f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                field=HEADER,
            )
        settings = request.app.state.settings
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json", exclude_unset=True)
        # Keyed with a server secret: bodies carry passwords, and a plain hash of
        # one could be guessed offline by whoever reads the table.
        fingerprint = hmac.new(
            settings.service_secret.encode(),
            json.dumps(
                [request.method, request.url.path, body], sort_keys=True, separators=(",", ":")
            ).encode(),
            hashlib.sha256,
        ).hexdigest()
        return cls(settings.service, caller or ANONYMOUS, key, fingerprint)

    def _params(self) -> dict[str, Any]:
        return {"caller": self.caller, "key": self.key, "request_hash": self.request_hash}

    async def replay(self, conn: psycopg.AsyncConnection) -> Response | None:
        """The first answer if the key was used before; None: go on and create.

        Must run inside the creating transaction; a concurrent request with the
        same key waits here until this transaction ends.
        """
        if self.key is None:
            return None
        table = _table(self.service)
        for _ in range(3):
            cur = await conn.execute(
                table_query("shop", "idempotency_claim", table), self._params()
            )
            if await cur.fetchone() is not None:
                return None
            cur = await conn.execute(table_query("shop", "idempotency_get", table), self._params())
            row = await cur.fetchone()
            if row is not None:
                break
            # Pruned between the two statements: claim it again.
        else:
            raise RuntimeError(f"idempotency key {self.key!r} neither free nor found")
        request_hash, status, body = row
        if not hmac.compare_digest(request_hash, self.request_hash):
            raise HTTPError(
                422,
                "idempotency_key_reused",
                f"this {HEADER} was already used with a different request;"
                " use a new key for a new request",
                field=HEADER,
            )
        log.info("%s %r replayed for %s", HEADER, self.key, self.caller)
        return JSONResponse(body, status_code=status, headers={REPLAYED_HEADER: "true"})

    async def answer(
        self, conn: psycopg.AsyncConnection, body: Any, *, status: int
    ) -> JSONResponse:
        """The response, recorded under the key in the caller's transaction."""
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        if self.key is not None:
            params = self._params() | {"status": status, "body": Jsonb(body)}
            await conn.execute(
                table_query("shop", "idempotency_answer", _table(self.service)), params
            )
        return JSONResponse(body, status_code=status)


async def prune(courier: Courier, service: str, *, retention_s: float = RETENTION_S) -> int:
    """Deletes keys older than retention_s; returns how many."""
    deleted = 0
    query = table_query("shop", "idempotency_prune", _table(service))
    while True:
        async with courier.pool.connection() as conn:
            cur = await conn.execute(query, {"retention_s": retention_s, "batch": PRUNE_BATCH})
            deleted += cur.rowcount
        if cur.rowcount < PRUNE_BATCH:
            return deleted


async def prune_loop(
    courier: Courier, service: str, *, interval_s: float = PRUNE_INTERVAL_S
) -> None:
    """Prunes now and then for as long as the HTTP process runs; errors are logged."""
    while True:
        # Jittered, so that replicas started together do not prune together.
        await asyncio.sleep(interval_s * random.uniform(0.05, 1.0))
        try:
            deleted = await prune(courier, service)
        except (psycopg.Error, OSError) as exc:
            log.warning("pruning %s idempotency keys failed: %s", service, exc)
            continue
        if deleted:
            log.info("pruned %d %s idempotency keys older than a day", deleted, service)
