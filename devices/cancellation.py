"""Cancellation that always propagates: the rule every loop, context manager and task owner follows.

A cancelled task must end. Two things on Python 3.11 can lose a cancellation and leave a loop running
under a caller that waits for it to stop (a hung shutdown, a hung test):

- ``asyncio.wait_for`` returns the result instead of raising ``CancelledError`` when the result and the
  cancellation land in the same loop turn (CPython gh-86296; fixed in 3.12). aiomqtt awaits it in
  connect, subscribe and publish; asyncpg and others use it too. The request is still counted by
  ``Task.cancelling()``, so a retry loop calls :func:`honour_cancellation` after each such call.
- ``with suppress(CancelledError): await task`` after ``task.cancel()`` also swallows a cancellation of
  the *caller* that arrives while it waits. :func:`stop` waits without catching anything.

docs/design-notes.md states the rule; tests/test_cancellation_rules.py refuses new breaches of it.

It lives in ``devices/`` (the one room every other may import) so the bridge, the alarm centre and the
simulators share one copy. It is no codec: codecs still never import asyncio.
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
    """Cancel tasks this code owns and wait until they have ended.

    A cancellation of the caller while it waits propagates (``asyncio.wait`` catches nothing); a task
    that failed with something other than its cancellation re-raises that failure here.
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
