"""Stopping background tasks reliably.

A single ``task.cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` (which aiomqtt and
pymodbus use for their timeouts) drops a cancellation that arrives just as the awaited future completes
(CPython gh-86296, fixed by the 3.12 rewrite of ``wait_for``). The task then carries on as if nothing
happened. So cancellation is repeated until the tasks are done, within a bound.

The caller's own cancellation is never swallowed: awaiting a task inside ``contextlib.suppress(CancelledError)``
cannot tell the task's cancellation from the caller's, and would let a cancelled caller carry on. Here the
caller waits with :func:`asyncio.wait`, which raises the caller's ``CancelledError`` and nothing of the tasks'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, Final

log = logging.getLogger(__name__)

#: How often a task that is still running gets cancelled again.
RECANCEL_EVERY_S: Final = 0.2
#: How long :func:`cancel_and_wait` waits by default for the tasks to end (their ``finally`` blocks included).
DEFAULT_STOP_TIMEOUT_S: Final = 10.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float = DEFAULT_STOP_TIMEOUT_S
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` (again and again if needed) until all are done or ``timeout_s`` passed.

    Returns the tasks still running at the deadline (logged; normally none). Exceptions of the tasks are
    retrieved so asyncio does not report them as never retrieved, and not raised: callers inspect done tasks
    themselves. A cancellation of the caller while it waits is raised to the caller (the tasks have been
    cancelled by then, and are not waited for).
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, remaining))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
    if pending:
        log.warning("%d tasks did not stop within %.1f s: %s", len(pending), timeout_s, [t.get_name() for t in pending])
    return pending


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``coro`` as a task named ``name`` for the duration of the block; on exit, :func:`cancel_and_wait` it.

    For the background jobs a service runs beside its main work (``stack.enter_async_context(running(...))``).
    """
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        await cancel_and_wait([task])
