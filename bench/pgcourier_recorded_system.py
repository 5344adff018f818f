"""pgcourier recorded: as pgcourier_observed, with an SDK TracerProvider recording a
span per send and per handled message (handed to a batch processor whose exporter
drops them): what tracing costs when every message's spans are kept."""

from __future__ import annotations

from harness import System
from pgcourier_observed_system import observed_system


def system(url: str) -> System:
    return observed_system(url, "recorded")
