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
#: The same where calls for help are stored alongside (``help_alongside``: PostgreSQL): a batch of
#: others then delays no call for help, and a bigger one costs fewer transactions and round trips per
#: event (a set-based batch costs about the same statements at 50 events as at 500).
OTHER_BATCH_ALONGSIDE = 500
#: A batch of others this small, with nothing else waiting, is stored on the caller's loop with the
#: intake's own store rather than handed to ``other_store`` (PostgreSQL's lane: a thread to wake, and
#: the GIL to take in turns, which at a steady few hundred events a second made most of an ack's tail).
#: Only after :data:`INLINE_AFTER` such batches in a row: in a flood the bridge's loop is busy with
#: reading and acking, and a transaction's turns there would hold up the batches behind it.
INLINE_OTHERS = 4
#: Small batches in a row before the next goes without the lane (see :data:`INLINE_OTHERS`).
INLINE_AFTER = 16
#: Event-loop turns given to the callers of a batch of calls for help before the next batch starts.
HANDOVER_TURNS = 4

#: Told of each committed batch: its events, the seconds its transaction took, and where it ran
#: (``help``: calls for help; ``others``: the rest; ``inline``: a small batch of others stored on the
#: caller's loop, see :data:`INLINE_OTHERS`).
BatchObserver = Callable[[int, float, str], None]
#: An event waiting for its transaction, and the future its submitter waits on.
_Pending = tuple[DeviceEvent, asyncio.Future[IngestResult]]


class BatchStore(Protocol):
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]: ...


class GroupCommitter:
    """Batch events into one transaction each; an async context manager owning its worker tasks.

    Priority decides what is stored first, here and only here (every transport hands its events to
    this class): events of priority 1 (a call for help) wait in a lane of their own and never share a
    transaction with technical events. Everything else is stored in arrival order, so a unit's
    ``mains_fail`` and ``mains_restored`` keep their meaning, in batches of at most
    ``max_other_batch``.

    With one writer (SQLite) one worker takes each batch from the help lane while it holds anything: a
    call for help that arrives while a batch of others commits goes into the very next transaction
    (``max_other_batch`` bounds that wait). With ``help_alongside`` (a store with concurrent writers:
    PostgreSQL) the help lane has a worker of its own, so a call for help is stored alongside a batch
    of others in progress, not after it; should both hold events of one unit, the store makes the
    later wait for the earlier (PostgreSQL's unit lock). ``help_store`` and ``other_store`` store the
    two lanes' batches when given (PostgreSQL's lanes, off the bridge's event loop); calls for help
    submitted together on their own (the ``alarm`` topic's batches) then go to ``help_store`` at once,
    each batch in a transaction of its own, without a worker in between.
    """

    def __init__(
        self,
        store: BatchStore,
        *,
        max_batch: int = 1000,
        max_other_batch: int = OTHER_BATCH,
        help_alongside: bool = False,
        help_store: BatchStore | None = None,
        other_store: BatchStore | None = None,
        inline_others: int = 0,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._store = store
        #: Batches of others up to this size, with nothing else waiting, go to ``store`` (see
        #: :data:`INLINE_OTHERS`); 0: always ``other_store``.
        self._inline_others = inline_others
        #: Where the help lane's batches and the others are stored (PostgreSQL: on loops of their own),
        #: else ``store``.
        self._help_store = help_store or store
        self._other_store = other_store or store
        #: Calls for help submitted on their own go straight to a help store of their own (a lane).
        self._help_direct = help_alongside and help_store is not None
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._max_other_batch = min(max_other_batch, max_batch)
        self.help_alongside = help_alongside
        #: Calls for help (priority 1), then everything else, each in arrival order.
        self._help: deque[_Pending] = deque()
        self._rest: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        #: Wakes the help lane's own worker (``help_alongside``); else the one worker's event.
        self._help_arrived = asyncio.Event() if help_alongside else self._arrived
        self._workers: list[asyncio.Task[None]] = []
        self.batches = 0
        self.last_batch_size = 0
        #: A store that cannot commit is one fault in the log (start, summaries, end), and /healthz
        #: reads it: readiness follows what batches do, not a one-row probe.
        self.fault = FaultLog(log, "store cannot commit events", noun="events not acked")
        #: When a batch last committed (``time.monotonic()``), or None.
        self.last_commit_at: float | None = None

    async def __aenter__(self) -> Self:
        if self.help_alongside:
            self._workers = [
                asyncio.create_task(
                    self._run(self._next_help, self._help_arrived, self._help_store), name="group-commit-help"
                ),
                asyncio.create_task(
                    self._run(self._next_other, self._arrived, self._other_store, self._inline_others),
                    name="group-commit",
                ),
            ]
        else:
            self._workers = [
                asyncio.create_task(self._run(self._next_batch, self._arrived), name="group-commit")
            ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
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
        if is_help(event.type):
            self._help.append((event, fut))
            self._help_arrived.set()
        else:
            self._rest.append((event, fut))
            self._arrived.set()
        return fut

    def _running(self) -> bool:
        return bool(self._workers) and not any(w.done() for w in self._workers)

    async def submit(self, event: DeviceEvent) -> IngestResult:
        """Store one event with whatever else arrives with it; returns once that batch is committed."""
        if not self._running():
            raise StoreUnavailable("intake is not running")
        return await self._enqueue(event, asyncio.get_running_loop())

    async def submit_many(self, events: Sequence[DeviceEvent]) -> list[IngestResult | StoreUnavailable]:
        """Store several events; per event its result or StoreUnavailable. Calls for help among them
        are taken out and stored first, in a transaction of their own."""
        if not self._running():
            raise StoreUnavailable("intake is not running")
        if self._help_direct and events and all(is_help(event.type) for event in events):
            return await self._store_help_now(events)
        loop = asyncio.get_running_loop()
        futures = [self._enqueue(event, loop) for event in events]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        known = (IngestResult, StoreUnavailable)
        return [o if isinstance(o, known) else StoreUnavailable(str(o)) for o in outcomes]

    async def _store_help_now(self, events: Sequence[DeviceEvent]) -> list[IngestResult | StoreUnavailable]:
        """Calls for help that came together (the ``alarm`` lane), stored by their caller on the help
        store at once: no turn of the loop to hand them to a worker and none to hand the answer back."""
        started = time.perf_counter()
        try:
            results: list[IngestResult | StoreUnavailable] = list(await self._help_store.ingest(events))
        except Exception as exc:
            self.fault.failed(exc, len(events))  # one fault with the batches': logged once, summarised
            return [StoreUnavailable(str(exc)) for _ in events]
        self.batches += 1
        self.last_batch_size = len(events)
        self.last_commit_at = time.monotonic()
        self.fault.recovered()
        if self._on_batch is not None:
            self._on_batch(len(events), time.perf_counter() - started, "help")
        return results

    def _next_batch(self) -> list[_Pending]:
        """The calls for help waiting (up to ``max_batch``), else up to ``max_other_batch`` others."""
        return self._next_help() if self._help else self._next_other()

    def _next_help(self) -> list[_Pending]:
        return _take(self._help, self._max_batch)

    def _next_other(self) -> list[_Pending]:
        return _take(self._rest, self._max_other_batch)

    async def _run(
        self,
        next_batch: Callable[[], list[_Pending]],
        arrived: asyncio.Event,
        store: BatchStore | None = None,
        inline_up_to: int = 0,
    ) -> None:
        lane = store or self._store
        small_in_a_row = 0
        while True:
            batch = next_batch()
            if not batch:
                arrived.clear()
                await arrived.wait()
                continue
            live = [(ev, fut) for ev, fut in batch if not fut.cancelled()]
            if not live:
                continue
            small = len(live) <= inline_up_to and not self._rest
            small_in_a_row = small_in_a_row + 1 if small else 0
            quiet = small_in_a_row > INLINE_AFTER
            started = time.perf_counter()
            try:
                results = await (self._store if quiet else lane).ingest([ev for ev, _ in live])
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
                self._on_batch(len(live), time.perf_counter() - started, _where(live, quiet))
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
            # Let new arrivals queue before the next batch is chosen; after calls for help, also let
            # their callers (a few hops through gather) send the acks before a batch of others holds
            # the loop (SQLite runs a batch's statements on it).
            for _ in range(HANDOVER_TURNS if is_help(live[0][0].type) else 1):
                await asyncio.sleep(0)


def _where(batch: list[_Pending], inline: bool) -> str:
    """Where a batch of the workers ran, for :data:`BatchObserver` (its events share one priority)."""
    return "inline" if inline else "help" if is_help(batch[0][0].type) else "others"


def _take(lane: deque[_Pending], limit: int) -> list[_Pending]:
    batch: list[_Pending] = []
    while lane and len(batch) < limit:
        batch.append(lane.popleft())
    return batch
