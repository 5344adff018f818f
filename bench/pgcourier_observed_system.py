"""pgcourier observed: the same Worker and Courier as pgcourier_system.py (which runs
with metrics and tracing off), with prometheus_client counting every message and the
trace context carried in every message's headers through the OpenTelemetry API, with
no SDK installed as the process's provider: what the library itself costs."""

from __future__ import annotations

import asyncio
import functools

import pgcourier_system
from harness import VT_S, System, Target, queue_reset, queue_rows

from pgcourier import Courier

DESCRIPTIONS = {
    "observed": "as pgcourier, with metrics on and trace context carried (API, no SDK)",
    "recorded": "as pgcourier_observed, with an SDK provider recording a span per send "
    "and per message (batch processor, exporter dropping them)",
}


def observed_system(url: str, mode: str) -> System:
    name = f"pgcourier_{mode}"
    target = Target(url, f"bench_{name}")

    async def create() -> None:
        async with Courier(url) as courier:
            await courier.queue_create(target.queue, visibility_timeout=VT_S)

    asyncio.run(create())
    producer = type(f"{mode.title()}Producer", (pgcourier_system.Producer,), {"mode": mode})
    return System(
        name,
        target,
        functools.partial(pgcourier_system.consumer, mode=mode),
        producer,
        reset=queue_reset,
        pending=queue_rows,
        describe=DESCRIPTIONS[mode],
    )


def system(url: str) -> System:
    return observed_system(url, "observed")
