"""Stopping the hub's background tasks: cancel, then wait until the task has really ended."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end (its own ``finally`` blocks run); its cancellation is not raised."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
