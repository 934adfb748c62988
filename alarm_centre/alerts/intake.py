"""Intake: every transport hands decoded events here and acks only what comes back stored.

:class:`GroupCommitter` collects events that arrive together into one store transaction (one fsync),
and each caller waits only for the batch its event joined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self

from devices.cancellation import stop
from devices.events import DeviceEvent

log = logging.getLogger(__name__)

IngestOutcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one event. ``accepted`` and ``duplicate`` mean it is durably stored."""

    result: IngestOutcome
    alert_id: str | None = None
    error: str | None = None


class StoreUnavailable(RuntimeError):
    """The store could not commit; nothing in the batch may be acknowledged."""


class Intake(Protocol):
    """What a transport needs: hand over one event, get its stored result (or StoreUnavailable)."""

    async def submit(self, event: DeviceEvent) -> IngestResult: ...


class BatchIntake(Intake, Protocol):
    """An intake that also takes several events at once (the MQTT link hands over what it read together)."""

    async def submit_many(self, events: Sequence[DeviceEvent]) -> list[IngestResult | StoreUnavailable]: ...


class BatchStore(Protocol):
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]: ...


class GroupCommitter:
    """Batch events into one transaction each; an async context manager owning its worker task."""

    def __init__(
        self, store: BatchStore, *, max_batch: int = 1000, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self._store = store
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[DeviceEvent, asyncio.Future[IngestResult]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.last_batch_size = 0

    async def __aenter__(self) -> Self:
        self._worker = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        worker, self._worker = self._worker, None
        await stop(worker)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(StoreUnavailable("bridge is shutting down"))

    async def submit(self, event: DeviceEvent) -> IngestResult:
        """Store one event with whatever else arrives with it; returns once that batch is committed."""
        if self._worker is None or self._worker.done():
            raise StoreUnavailable("intake is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, fut))
        return await fut

    async def submit_many(self, events: Sequence[DeviceEvent]) -> list[IngestResult | StoreUnavailable]:
        """Store several events (they join the same batch); per event its result or StoreUnavailable."""
        if self._worker is None or self._worker.done():
            raise StoreUnavailable("intake is not running")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[IngestResult]] = []
        for event in events:
            fut: asyncio.Future[IngestResult] = loop.create_future()
            self._queue.put_nowait((event, fut))
            futures.append(fut)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        known = (IngestResult, StoreUnavailable)
        return [o if isinstance(o, known) else StoreUnavailable(str(o)) for o in outcomes]

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(ev, fut) for ev, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                results = await self._store.ingest([ev for ev, _ in live])
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable("bridge is shutting down"))
                raise
            except Exception as exc:
                log.error("store could not commit a batch of %d events: %s", len(live), exc)
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(str(exc)))
                continue
            self.batches += 1
            self.last_batch_size = len(live)
            if self._on_batch is not None:
                self._on_batch(len(live))
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
