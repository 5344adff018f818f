import asyncio
import contextvars

import pytest

from pgcourier.eager import start_eagerly

current = contextvars.ContextVar("current", default="outside")


async def test_coroutine_that_never_waits_finishes_without_a_task() -> None:
    ran: list[str] = []

    async def quick() -> None:
        ran.append("done")

    assert start_eagerly(quick()) is None
    assert ran == ["done"]


async def test_coroutine_that_waits_runs_its_first_step_at_once_and_the_rest_in_a_task() -> None:
    steps: list[str] = []

    async def slow() -> None:
        steps.append("first")
        current.set("inside")
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        steps.append(f"last, still {current.get()}")

    task = start_eagerly(slow())
    assert steps == ["first"]
    assert current.get() == "outside"  # its context is its own, as a task's is
    assert task is not None
    await task
    assert steps == ["first", "last, still inside"]


async def test_error_after_a_wait_is_the_tasks_error() -> None:
    async def failing() -> None:
        await asyncio.sleep(0.001)
        raise ValueError("broken")

    task = start_eagerly(failing())
    assert task is not None
    with pytest.raises(ValueError, match="broken"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    seen: list[str] = []

    async def waiting() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = start_eagerly(waiting())
    assert task is not None
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"] and task.cancelled()


async def test_coroutine_that_cancels_itself_before_waiting_just_ends() -> None:
    async def gives_up() -> None:
        raise asyncio.CancelledError

    assert start_eagerly(gives_up()) is None


async def test_error_before_any_wait_stays_with_the_coroutine_not_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("at once")

    started = start_eagerly(broken())  # must not raise here
    assert started is not None and started.done()
    with pytest.raises(ValueError, match="at once"):
        await started
