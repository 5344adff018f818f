"""Waiting for something another process does: the one polling loop of the demo and
the supervisor (the tests have theirs in tests/helpers.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(attempt: Callable[[], T | None], *, within_s: float, interval_s: float = 0.2) -> T | None:
    """Calls attempt() until it returns something other than None, and returns that;
    None once within_s has passed (attempt() is called at least once, and once more
    at the end, so that a slow last interval is not a false timeout)."""
    deadline = time.monotonic() + within_s
    while True:
        result = attempt()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            return attempt()
        time.sleep(interval_s)
