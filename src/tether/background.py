"""Background tasks the components run on the server's event loop (pollers, watchers, sweepers)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has finished, so nothing it does outlives its component's stop."""
    if task is None or task.done():
        return
    task.cancel()
    # a task that failed on its way out does not stop its component from stopping
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


__all__ = ["stop_task"]
