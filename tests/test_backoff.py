"""Retry backoff as a table: exponential, capped, with equal jitter (half fixed, half
random), pure and so proven without a queue or a clock."""

from __future__ import annotations

import random

import pytest

from pgcourier.loops import Backoff, backoff_delay


@pytest.mark.parametrize(
    ("attempt", "base_s", "max_s", "ceiling_s"),
    [
        (1, 1.0, 300.0, 1.0),
        (2, 1.0, 300.0, 2.0),
        (3, 1.0, 300.0, 4.0),
        (9, 1.0, 300.0, 256.0),
        (10, 1.0, 300.0, 300.0),  # capped
        (0, 0.5, 30.0, 0.5),  # no attempt yet counts as the first
        (10**9, 0.5, 30.0, 30.0),  # the exponent is bounded: no overflow
        (4, 2.0, 1.0, 1.0),  # a cap below the base wins
    ],
)
def test_a_retry_waits_between_half_and_all_of_its_capped_exponential_ceiling(
    attempt: int, base_s: float, max_s: float, ceiling_s: float
) -> None:
    random.seed(attempt)
    delays = [backoff_delay(attempt, base_s=base_s, max_s=max_s) for _ in range(500)]
    assert all(ceiling_s / 2 <= d <= ceiling_s for d in delays), (min(delays), max(delays))
    # Jittered: spread over the upper half, not one fixed value.
    assert max(delays) - min(delays) > ceiling_s / 4


def test_a_backoff_grows_with_failures_in_a_row_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(base_s=1.0, max_s=8.0)
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    assert backoff.failures == len(ceilings)
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0
