"""The options of a send, typed once: Courier's send, send_batch and publish take them
as keyword arguments with visible defaults, and a handler's Context passes them on."""

from __future__ import annotations

from typing import Any, TypedDict

import psycopg


class SendOptions(TypedDict, total=False):
    """What send, send_batch and publish all take."""

    type: str | None
    delay: float
    headers: dict[str, Any] | None
    ordering_key: str | None
    correlation_id: str | None
    causation_id: str | None
    conn: psycopg.AsyncConnection | None


class SendOneOptions(SendOptions, total=False):
    """send's, which also takes an idempotency key (a batch or a topic has none)."""

    idempotency_key: str | None
