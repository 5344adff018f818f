"""A service's processes: `python -m services.<name> http` or `... worker`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from starlette.applications import Starlette

from pgcourier import Courier, PgCourierError, Worker, logs

from .metrics import serve_worker_metrics
from .settings import ServiceSettings
from .tracing import trace_to_files

AppFactory = Callable[[ServiceSettings], Starlette]
WorkerSetup = Callable[[Worker, ServiceSettings], None]
# A task a worker process runs beside its worker, until the worker stops (the orders
# service's expiry of saga steps).
Companion = Callable[[Courier, ServiceSettings], Awaitable[None]]


async def run_worker(
    settings: ServiceSettings,
    setup: WorkerSetup,
    *,
    name: str,
    companions: Sequence[Companion] = (),
) -> None:
    async with Courier(settings.database_url, pool_max_size=10) as courier:
        worker = Worker(
            courier,
            concurrency=20,
            batch_size=20,
            name=name,
            transaction_per_batch=settings.transaction_per_batch,
        )
        setup(worker, settings)
        serve_worker_metrics()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        logging.getLogger(settings.service).info("worker started")
        await run_with_companions(worker, [c(courier, settings) for c in companions])


async def run_with_companions(worker: Worker, companions: Sequence[Awaitable[None]]) -> None:
    """Runs the worker and its companions until the worker stops; a companion that ends
    (it runs until cancelled, so it failed) stops the worker and the process, with its
    error, for the supervisor to restart it."""
    run = asyncio.ensure_future(worker.run())
    tasks = [asyncio.ensure_future(c) for c in companions]
    try:
        await asyncio.wait({run, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            worker.stop()
            await run
            for task in tasks:
                if task.done():
                    task.result()
        run.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(
    service: str,
    app: AppFactory,
    setup: WorkerSetup | None,
    *,
    companions: Sequence[Companion] = (),
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("role", choices=["http", "worker"] if setup else ["http"])
    args = parser.parse_args()
    # runner.py names each replica (orders-worker-2); compose.yaml each service and role.
    instance = os.environ.get("SHOP_INSTANCE") or f"{service}-{args.role}"
    # Text lines by default, JSON with PGCOURIER_LOG_FORMAT=json (pgcourier/logs.py).
    logs.configure(instance=instance)
    trace_to_files(instance=instance)
    try:
        settings = ServiceSettings.from_env(service)
        if args.role == "worker":
            assert setup is not None
            asyncio.run(run_worker(settings, setup, name=instance, companions=companions))
        else:
            uvicorn.run(
                app(settings),
                host=settings.host,
                port=settings.port,
                log_level="warning",
                timeout_graceful_shutdown=10,
            )
    except PgCourierError as exc:
        print(f"{service}: error: {exc}", file=sys.stderr)
        return 1
    return 0
