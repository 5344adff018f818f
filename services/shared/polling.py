"""Waiting for something another process does: the one polling loop of the demo and
the supervisor (the tests have theirs in tests/helpers.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(attempt: Callable[[], T | None], *, within_s: float, interval_s: float = 0.2) -> T | None:
    """Calls attempt() every interval_s until it returns something other than None,
    and returns that; None if it still had not once within_s had passed."""
    deadline = time.monotonic() + within_s
    while True:
        result = attempt()
        if result is not None or time.monotonic() >= deadline:
            return result
        time.sleep(interval_s)
