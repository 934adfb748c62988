"""Intake: every transport hands decoded events here and acks only what comes back stored.

:class:`GroupCommitter` collects events that arrive together into one store transaction (one fsync),
and each caller waits only for the batch its event joined. Calls for help are stored first (see
:class:`GroupCommitter`): the one place where priority decides storing order, for every transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self

from alarm_centre.faults import FaultLog
from devices.cancellation import stop
from devices.events import DeviceEvent
from devices.vocabulary import is_help

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


#: Most events of priority 2, 3 or none in one transaction. It bounds how long a call for help that
#: arrives meanwhile waits for the transaction in progress (on SQLite a batch's statements hold the
#: event loop), at the cost of a commit (one fsync) per this many events in a flood.
OTHER_BATCH = 50
#: Event-loop turns given to the callers of a batch of calls for help before the next batch starts.
HANDOVER_TURNS = 4

#: An event waiting for its transaction, and the future its submitter waits on.
_Pending = tuple[DeviceEvent, asyncio.Future[IngestResult]]


class BatchStore(Protocol):
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]: ...


class GroupCommitter:
    """Batch events into one transaction each; an async context manager owning its worker task.

    Priority decides what is stored first, here and only here (every transport hands its events to
    this class): events of priority 1 (a call for help) wait in a lane of their own, and each batch is
    taken from that lane while it holds anything. A call for help therefore never shares a transaction
    with technical events, and one that arrives while a big batch commits goes into the very next
    transaction. Everything else is stored in arrival order, so a unit's ``mains_fail`` and
    ``mains_restored`` keep their meaning, in batches of at most ``max_other_batch``, which bounds
    the wait of a call for help that arrives while one commits.
    """

    def __init__(
        self,
        store: BatchStore,
        *,
        max_batch: int = 1000,
        max_other_batch: int = OTHER_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._max_other_batch = min(max_other_batch, max_batch)
        #: Calls for help (priority 1), then everything else, each in arrival order.
        self._help: deque[_Pending] = deque()
        self._rest: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.last_batch_size = 0
        #: A store that cannot commit is one fault in the log (start, summaries, end), and /healthz
        #: reads it: readiness follows what batches do, not a one-row probe.
        self.fault = FaultLog(log, "store cannot commit events", noun="events not acked")
        #: When a batch last committed (``time.monotonic()``), or None.
        self.last_commit_at: float | None = None

    async def __aenter__(self) -> Self:
        self._worker = asyncio.create_task(self._run(), name="group-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        worker, self._worker = self._worker, None
        await stop(worker)
        for lane in (self._help, self._rest):
            while lane:
                _, fut = lane.popleft()
                if not fut.done():
                    fut.set_exception(StoreUnavailable("bridge is shutting down"))

    def queued(self, *, help_only: bool = False) -> int:
        """Events waiting for a transaction (only calls for help with ``help_only``)."""
        return len(self._help) + (0 if help_only else len(self._rest))

    def _enqueue(self, event: DeviceEvent, loop: asyncio.AbstractEventLoop) -> asyncio.Future[IngestResult]:
        fut: asyncio.Future[IngestResult] = loop.create_future()
        (self._help if is_help(event.type) else self._rest).append((event, fut))
        self._arrived.set()
        return fut

    async def submit(self, event: DeviceEvent) -> IngestResult:
        """Store one event with whatever else arrives with it; returns once that batch is committed."""
        if self._worker is None or self._worker.done():
            raise StoreUnavailable("intake is not running")
        return await self._enqueue(event, asyncio.get_running_loop())

    async def submit_many(self, events: Sequence[DeviceEvent]) -> list[IngestResult | StoreUnavailable]:
        """Store several events; per event its result or StoreUnavailable. Calls for help among them
        are taken out and stored first, in a transaction of their own."""
        if self._worker is None or self._worker.done():
            raise StoreUnavailable("intake is not running")
        loop = asyncio.get_running_loop()
        futures = [self._enqueue(event, loop) for event in events]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        known = (IngestResult, StoreUnavailable)
        return [o if isinstance(o, known) else StoreUnavailable(str(o)) for o in outcomes]

    def _next_batch(self) -> list[_Pending]:
        """The calls for help waiting (up to ``max_batch``), else up to ``max_other_batch`` others."""
        lane, limit = (self._help, self._max_batch) if self._help else (self._rest, self._max_other_batch)
        batch: list[_Pending] = []
        while lane and len(batch) < limit:
            batch.append(lane.popleft())
        return batch

    async def _run(self) -> None:
        while True:
            if not self._help and not self._rest:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            live = [(ev, fut) for ev, fut in self._next_batch() if not fut.cancelled()]
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
                self.fault.failed(exc, len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(str(exc)))
                continue
            self.batches += 1
            self.last_batch_size = len(live)
            self.last_commit_at = time.monotonic()
            self.fault.recovered()
            if self._on_batch is not None:
                self._on_batch(len(live))
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
            # Let new arrivals queue before the next batch is chosen; after calls for help, also let
            # their callers (a few hops through gather) send the acks before a batch of others holds
            # the loop (SQLite runs a batch's statements on it).
            for _ in range(HANDOVER_TURNS if is_help(live[0][0].type) else 1):
                await asyncio.sleep(0)
