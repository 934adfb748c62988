"""The cancellation rule for simulators (see alarm_centre/cancellation.py, which simulators may not import).

A cancelled simulator task always ends: aiomqtt awaits ``asyncio.wait_for``, which on Python 3.11 drops
a cancellation that lands together with its result (CPython gh-86296), so a retry loop checks
``Task.cancelling()`` after each such call; a task's owner stops it without catching ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from typing import Any


def cancel_requests() -> int:
    """How many cancellations of the running task are pending (the base for :func:`honour_cancellation`)."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancel_requests() needs a running task")
    return task.cancelling()


def honour_cancellation(base: int) -> None:
    """Raise ``CancelledError`` if the running task was cancelled since ``base`` and something lost it."""
    if cancel_requests() > base:
        raise asyncio.CancelledError


async def stop(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks this simulator owns and wait until they have ended.

    A cancellation of the caller while it waits propagates; a task's own failure is re-raised here.
    """
    owned = [task for task in tasks if task is not None]
    for task in owned:
        task.cancel()
    if not owned:
        return
    await asyncio.wait(owned)
    for task in owned:
        if not task.cancelled():
            task.result()
