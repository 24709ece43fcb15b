"""Stopping a component's background task: cancelled, awaited, and never an error of its own."""

from __future__ import annotations

import asyncio

from tether.background import stop_task


async def test_the_task_has_finished_when_stop_returns() -> None:
    cleaned = asyncio.Event()

    async def poller() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # clean-up that itself awaits
            cleaned.set()

    task = asyncio.create_task(poller())
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.cancelled()
    assert cleaned.is_set()


async def test_a_task_failing_on_its_way_out_does_not_fail_the_stop() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broken clean-up") from None

    task = asyncio.create_task(fails_when_cancelled())
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.done()


async def test_nothing_to_stop() -> None:
    await stop_task(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_task(done)
    assert done.done()
    assert not done.cancelled()
