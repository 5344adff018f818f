"""Handler slots: how many messages a worker may hold at once, shared by its queues."""

from __future__ import annotations

import asyncio


class Slots:
    """Counts free handler slots. Claims reserve them, finished handlers release them.

    refill: while handlers are running, no claim is made for fewer than this many
    slots, since claiming a few at a time costs a round trip each and a busy queue
    would then never be claimed in full batches.
    """

    def __init__(self, total: int, *, refill: int) -> None:
        self.total = total
        self.refill = refill
        self.free = total
        self._freed = asyncio.Event()

    def reserve(self, wanted: int) -> int:
        """Grants up to `wanted` slots, or none (see refill)."""
        free = self.free
        if free < min(wanted, self.refill) and free < self.total:
            return 0
        granted = min(wanted, free)
        self.free -= granted
        return granted

    def release(self, count: int = 1) -> None:
        if count:
            self.free += count
            self._freed.set()

    def interrupt(self) -> None:
        """Wakes whoever waits in wait(), e.g. to notice a stop."""
        self._freed.set()

    async def wait(self) -> None:
        """Returns once a refill's worth of slots is free, every slot is, or on interrupt()."""
        if self.free >= self.refill or self.free == self.total:
            return
        self._freed.clear()
        await self._freed.wait()
