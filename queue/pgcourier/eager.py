"""Starting a coroutine at once, and making a task of it only if it has to wait.

A worker starts one handler per message. Most handlers of a busy queue either finish
without waiting on anything or run a while before their first wait, and a task per
message (creation, two trips through the event loop, bookkeeping) then costs more
than the handler. This runs the coroutine's first step immediately, in its own
copy of the context as a task would, and wraps only the rest in a task: what
Python 3.12 calls an eager task, for the Pythons that do not have it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Runs `coro` up to its first wait; returns a task finishing it, or None if done.

    An error raised before the first wait stays with the coroutine, as a task's would:
    it is returned in a finished future, never raised into the caller (which starts
    many of these in a row and must go on with the others).
    """
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration:
        return None
    except asyncio.CancelledError:
        return None  # cancelled itself before waiting: as a task would, it just ends
    except (KeyboardInterrupt, SystemExit):
        raise  # a task re-raises these too
    except BaseException as exc:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
    return asyncio.get_running_loop().create_task(_finish(coro, waiting_on), context=context)


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drives a started coroutine as a task would: awaits what it yielded, resumes it."""
    while True:
        try:
            if waiting_on is None:  # a bare yield, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                # The future was yielded to us as to a task, flagged as awaited; a
                # task clears the flag before waiting on it, and so must we.
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # its error (or our cancellation) goes to it
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
