"""What a handler gets besides its message: a way to send that keeps the lineage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import psycopg

from .message import Message
from .options import SendOneOptions, SendOptions

if TYPE_CHECKING:
    from .courier import Courier


_Options = TypeVar("_Options", SendOptions, SendOneOptions)


@dataclass(slots=True)
class Context:
    """Handed to every handler with its message.

    conn: for transactional handlers, the connection whose transaction holds the
    inbox record, the acknowledgement and anything the handler writes or sends;
    None otherwise.
    """

    courier: Courier
    message: Message
    conn: psycopg.AsyncConnection | None = None

    def _lineage(self, options: _Options) -> _Options:
        options.setdefault("correlation_id", self.message.correlation_id)
        options.setdefault("causation_id", self.message.id)
        options.setdefault("conn", self.conn)
        return options

    async def send(self, queue: str, payload: Any, **options: Unpack[SendOneOptions]) -> int | None:
        """Sends a message caused by this one (same correlation id, in the same
        transaction); the options are Courier.send's."""
        return await self.courier.send(queue, payload, **self._lineage(options))

    async def send_batch(
        self, queue: str, payloads: Sequence[Any], **options: Unpack[SendOptions]
    ) -> list[int]:
        return await self.courier.send_batch(queue, payloads, **self._lineage(options))

    async def publish(self, topic: str, payload: Any, **options: Unpack[SendOptions]) -> list[str]:
        return await self.courier.publish(topic, payload, **self._lineage(options))


Handler = Callable[[Message, Context], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    handler: Handler
    type: str | None = None
    transactional: bool = False
    # The database roles whose messages this route accepts; None: any.
    senders: frozenset[str] | None = None
