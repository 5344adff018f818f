"""Loops that do not die: each step's error is logged and the loop goes on after a
backoff. Only cancellation (or the loop's own stop condition) ends them."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import psycopg
from psycopg_pool import PoolTimeout

from .errors import DatabaseError


def backoff_delay(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random. The exponent is
    bounded, however many attempts."""
    ceiling = min(max_s, base_s * float(2 ** min(max(attempt - 1, 0), 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Backoff:
    """Counts failures in a row and gives the backoff_delay of the next attempt."""

    def __init__(self, *, base_s: float, max_s: float) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, base_s=self.base_s, max_s=self.max_s)

    def reset(self) -> None:
        self.failures = 0


def is_database_unavailable(exc: BaseException) -> bool:
    """Errors that say the database is unreachable or restarting: expected now and then."""
    if isinstance(exc, DatabaseError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, psycopg.OperationalError | OSError | PoolTimeout)


async def forever(
    name: str,
    step: Callable[[], Awaitable[None]],
    *,
    log: logging.Logger,
    backoff: Backoff,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Runs `step` again and again until `until()`; an error in one step is logged
    (WARNING when the database is unavailable, ERROR otherwise) and the next step
    waits out the backoff."""
    while not until():
        try:
            await step()
        except Exception as exc:
            delay = backoff.next_delay()
            level = logging.WARNING if is_database_unavailable(exc) else logging.ERROR
            log.log(
                level,
                "%s failed (%d in a row), trying again in %.2fs: %s: %s",
                name,
                backoff.failures,
                delay,
                type(exc).__name__,
                exc,
                exc_info=level == logging.ERROR,
            )
            await asyncio.sleep(delay)
        else:
            backoff.reset()
