"""A run's ping timeouts on one timer (sim_switch/dial/deadlines.py) end as asyncio.timeout's do."""

from __future__ import annotations

import asyncio

import pytest

from sim_switch.dial.deadlines import Deadlines

LENGTH_S = 0.05


async def test_a_bound_that_comes_due_raises_timeout_error_and_one_that_ends_in_time_does_not() -> None:
    deadlines = Deadlines(LENGTH_S)
    never = asyncio.Event()
    ended: list[str] = []

    async def slow(name: str) -> None:
        with pytest.raises(TimeoutError):
            async with deadlines.bound():
                await never.wait()
        ended.append(name)

    async def quick() -> None:
        async with deadlines.bound():
            await asyncio.sleep(0)
        ended.append("quick")

    async with asyncio.TaskGroup() as group:
        group.create_task(slow("first"))
        group.create_task(quick())
        group.create_task(slow("second"))
    assert ended == ["quick", "first", "second"]  # in the order they came due, the ended one skipped
    deadlines.close()


async def test_a_cancellation_of_someone_else_is_not_turned_into_a_timeout() -> None:
    deadlines = Deadlines(LENGTH_S)
    inside = asyncio.Event()

    async def bounded() -> None:
        async with deadlines.bound():
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(bounded())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_bounds_set_after_the_first_comes_due_are_still_kept() -> None:
    """The one timer moves to the next bound held once the first is done with."""
    deadlines = Deadlines(LENGTH_S)
    timed_out = 0

    async def one() -> None:
        nonlocal timed_out
        try:
            async with deadlines.bound():
                await asyncio.Event().wait()
        except TimeoutError:
            timed_out += 1

    await one()
    await one()  # its bound is set once the first's timer has fired and found no other
    assert timed_out == 2
    deadlines.close()
