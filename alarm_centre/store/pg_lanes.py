"""The intake's transactions on event loops of their own (PostgreSQL).

Every statement of a transaction waits for PostgreSQL's answer and then for a turn of the event loop
(asyncpg hears the answer in one turn and resumes the transaction in the next). During a storm the
bridge's loop is busy with the flood -- reading, decoding and acking thousands of events -- and on this
2-core machine each turn took tens to hundreds of milliseconds: a call for help's dozen statements
then cost seconds, where SQLite, whose statements run without a turn, took a few turns in all; and a
node's batches of others were bound by those turns too, not by PostgreSQL nor by the CPU.

A :class:`StoreLane` runs a lane's transactions on a loop in a thread of its own, with connections of
its own, so they wait only for PostgreSQL (and the GIL, which the bridge hands over every millisecond).
The intake has two (:meth:`PostgresStore.lanes`): one for calls for help, one for the rest. A steady
trickle of others, in batches of a few events, is stored on the bridge's loop instead
(:data:`alarm_centre.alerts.intake.INLINE_OTHERS`): there a turn is short, and the lane's hand-overs
made most of an ack's tail. The events
go in and the answers come back through the bridge's loop; what listeners hear after the commit is
handed back to the bridge's loop too (:meth:`PostgresStore._after_commit`). What runs on a lane is the
ingest itself, its hooks included: they keep no state but per transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, Self, TypeVar

import asyncpg

from alarm_centre.alerts.intake import IngestResult
from devices.events import DeviceEvent

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Connections a lane keeps: one transaction at a time, and one to spare for a retry.
LANE_CONNECTIONS = 2


class LaneStore(Protocol):
    """What the lane needs of its store (:class:`alarm_centre.store.postgres.PostgresStore`)."""

    async def new_pool(self, size: int) -> Any: ...
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]: ...


class StoreLane:
    """An async context manager: a thread running an event loop with a small pool of its own, where
    :meth:`ingest` stores a batch (``store.ingest``)."""

    def __init__(self, store: LaneStore, name: str) -> None:
        self._store = store
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: The lane's connections (created and used on the lane's loop only).
        self.pool: Any = None

    async def __aenter__(self) -> Self:
        started: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name=f"pg-lane-{self.name}", daemon=True
        )
        self._thread.start()
        self._loop = await asyncio.wrap_future(started)
        try:
            self.pool = await self._on_lane(self._store.new_pool(LANE_CONNECTIONS))
        except BaseException:
            await self._stop_thread()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        pool, self.pool = self.pool, None
        try:
            if pool is not None:
                async with asyncio.timeout(5):
                    await self._on_lane(pool.close())
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("the %s lane's connections did not close cleanly: %s", self.name, exc)
        finally:
            await self._stop_thread()

    @staticmethod
    def _serve(started: concurrent.futures.Future[asyncio.AbstractEventLoop]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        started.set_result(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _stop_thread(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def _on_lane(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the lane's loop; cancelling the caller cancels it there."""
        assert self._loop is not None, "the lane is not running"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    def owns_running_loop(self) -> bool:
        """Whether the code asking runs on the lane."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """Store a batch as ``store.ingest`` does, on the lane."""
        return await self._on_lane(self._store.ingest(events))
