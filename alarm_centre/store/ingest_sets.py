"""A batch of device events stored set-based (PostgreSQL): what most events do, done for all at once.

Each statement of a write transaction costs PostgreSQL a round trip. A store whose
:meth:`IngestDatabase.start_batch` answers has already claimed the batch's units, recorded its events and
read its units in a few statements (:class:`BatchStart`). :class:`SetBasedBatch` does the rest:

- the open alerts the new events would join or clear are read (row-locked) in one statement;
- a new event that **joins** an open alert is noted as a :class:`Repeat`; the repeats are written together;
- a new event that **raises** an alert is noted too, and the noted raises are inserted together: the
  alerts and their ``raised`` entries, each raise hook once for all of them (its batch form, when the
  feature gives one), the call-backs of calls for help;
- a **heartbeat** with no silent-unit alert open to clear only needs its event hooks;
- the event hooks run once for every noted event (their batch forms, when given).

Anything else (a restore, a cancel, a command result, a unit's second event in the batch, a system
event, a heartbeat that clears an alert) is handled on its own, exactly as one by one, after the notes
so far are written (so every alert's timeline keeps its order). The result equals storing the events one
by one, in order; ``tests/store/test_set_based_raise.py`` compares the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.lifecycle import Source
from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.outbox import Outbox, OutboxCommand
from alarm_centre.store.raising import (
    NO_UNIT_DETAIL,
    CallBackKind,
    NewAlert,
    call_back,
    event_detail,
    is_test_alarm,
    needs_resident_unit,
    new_alert,
    raises,
    source_of,
    wants_call_back,
)
from alarm_centre.store.tx import (
    Database,
    EventBatchHook,
    EventHook,
    LogEntry,
    PostCommit,
    RaiseBatchHook,
    Raised,
    RaiseHook,
    Row,
    Stored,
    Tx,
)
from alarm_centre.store.tx import dumps as _j
from alarm_centre.store.tx import now as _now
from devices.events import DeviceEvent
from devices.vocabulary import EventType, alert_key, is_help, priority_of

#: Events noted between two turns of the event loop (the others waiting meanwhile: a call for help's
#: statements on another connection, acks).
LOOP_SHARE = 50
#: An event's idempotency key.
EventKey = tuple[str, str]
#: An event's link to the alert it belongs to: (device_id, event_id, alert_id).
Link = tuple[str, str, int]


@dataclass
class BatchStart:
    """What a store settled for a whole batch at once, in a few set-based statements (PostgreSQL): each
    unit claimed, each event recorded or found a duplicate, each unit's row read and marked seen."""

    #: Events whose unit another node is storing right now, and the error they are rejected with.
    busy: frozenset[int] = frozenset()
    busy_error: str = ""
    #: Events recorded now (the first of their key in the batch).
    new: frozenset[int] = frozenset()
    #: Rows of the batch's units as read before this batch (the first event of each unit uses it).
    devices: dict[str, Row] = field(default_factory=dict)
    #: Duplicates of events stored by earlier batches, by key: the alert the original joined.
    earlier: dict[EventKey, int | None] = field(default_factory=dict)
    #: Open alerts already read and row-locked, by key, for the keys in ``locked_keys`` (those a store
    #: could name before reading any unit: see :func:`open_keys_known_up_front`).
    open_alerts: dict[str, Row] = field(default_factory=dict)
    locked_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Repeat:
    """A new event joining an open alert: its repeat is counted and logged on the alert's timeline."""

    alert_id: int
    at: float
    actor: str
    source: str
    detail: str


class IngestDatabase(Database, Protocol):
    """What storing events needs of the store beyond transactions: the per-unit claim, the hooks, and
    (a store whose :meth:`start_batch` answers) the set-based statements."""

    @property
    def raise_hooks(self) -> tuple[RaiseHook, ...]: ...
    @property
    def event_hooks(self) -> tuple[EventHook, ...]: ...
    @property
    def raise_hook_pairs(self) -> tuple[tuple[RaiseHook, RaiseBatchHook | None], ...]: ...
    @property
    def event_hook_pairs(self) -> tuple[tuple[EventHook, EventBatchHook | None], ...]: ...
    async def claim_unit(self, tx: Tx, device_id: str) -> None: ...
    async def start_batch(self, tx: Tx, events: Sequence[DeviceEvent]) -> BatchStart | None: ...
    async def link_events(self, tx: Tx, links: Sequence[Link]) -> None: ...
    async def lock_open_alerts(self, tx: Tx, keys: Sequence[str]) -> dict[str, Row]: ...
    async def add_repeats(self, tx: Tx, repeats: Sequence[Repeat]) -> None: ...
    async def insert_alerts(self, tx: Tx, alerts: Sequence[NewAlert], now: float) -> dict[str, Row]: ...
    async def log_actions(self, tx: Tx, post: PostCommit, entries: Sequence[LogEntry]) -> None: ...
    async def resident_units(self, tx: Tx, resident_ids: Sequence[str]) -> dict[str, Row]: ...


class EventAlone(Protocol):
    """What storing one event on its own does (:class:`alarm_centre.store.ingest.Ingest`)."""

    async def apply_new(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None, links: list[Link] | None
    ) -> IngestResult: ...
    async def seen(self, tx: Tx, ev: DeviceEvent) -> Row | None: ...


class Looked(Enum):
    """Why a new event's key is looked up among the open alerts."""

    #: It raises an alert or joins the open one of its key.
    RAISE = "raise"
    #: A heartbeat: it clears its unit's silent-unit alert (``no_heartbeat``) when one is open.
    HEARTBEAT = "heartbeat"


class OpenAlerts:
    """The open alerts of the batch's keys, read (and row-locked, as a join's UPDATE would) in one
    statement -- or already read by the batch's start -- and read again for a key something handled
    since may have changed."""

    def __init__(
        self, store: IngestDatabase, candidates: dict[int, tuple[str, Looked]], start: BatchStart
    ) -> None:
        self._store = store
        #: Events looked up, by index in the batch: their alert key and why.
        self.candidates = candidates
        self._open: dict[str, Row] = dict(start.open_alerts)
        #: Keys whose entry in ``_open`` (or its absence) is current.
        self._known: set[str] = set(start.locked_keys)

    async def of(self, tx: Tx, n: int) -> Row | None:
        """The open alert of event ``n``'s key (read with every later candidate's unknown key when
        needed)."""
        key = self.candidates[n][0]
        if key not in self._known:
            keys = sorted({k for i, (k, _) in self.candidates.items() if i >= n and k not in self._known})
            found = await self._store.lock_open_alerts(tx, keys)
            for k in keys:
                if k in found:
                    self._open[k] = found[k]
                else:
                    self._open.pop(k, None)
            self._known.update(keys)
        return self._open.get(key)

    def changed(self, key: str | None) -> None:
        """``key`` may have been raised, joined or cleared (None: any key may have)."""
        if key is None:
            self._known.clear()
        else:
            self._known.discard(key)


def looked_up(ev: DeviceEvent, resident_id: str | None) -> tuple[str, Looked] | None:
    """The key a new event looks up among the open alerts, and why; None when it looks up none (a
    system event, or a type that neither raises nor is a heartbeat). One rule for the batch's
    candidates and for the keys a store reads up front."""
    if ev.source == "system":
        return None
    if raises(ev.type):
        return alert_key(ev.device_id, resident_id, ev.type, ev.data), Looked.RAISE
    if ev.type is EventType.HEARTBEAT:
        return alert_key(ev.device_id, resident_id, EventType.NO_HEARTBEAT, {}), Looked.HEARTBEAT
    return None


def open_keys_known_up_front(events: Sequence[DeviceEvent]) -> list[str]:
    """The keys whose open alerts a batch may look up that are known before its units are read: every
    one but a call for help's (which follows the unit's resident; no other key does). A superset of what
    :class:`SetBasedBatch` looks up; a store may read and lock them at the start."""
    keys = {looked[0] for ev in events if not is_help(ev.type) and (looked := looked_up(ev, None))}
    return sorted(keys)


@dataclass(frozen=True)
class _Raise:
    n: int
    alert: NewAlert
    device: Row | None


class SetBasedBatch:
    """One batch after :class:`BatchStart`, in its transaction (see the module's docstring)."""

    def __init__(
        self,
        store: IngestDatabase,
        outbox: Outbox,
        alone: EventAlone,
        events: Sequence[DeviceEvent],
        start: BatchStart,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._alone = alone
        self._events = events
        self._start = start
        self._results: list[IngestResult | None] = [None] * len(events)
        self._links: list[Link] = []
        self._open = OpenAlerts(store, self._candidates(), start)
        # Noted and not yet written:
        self._repeats: list[Repeat] = []
        self._raises: list[_Raise] = []
        self._raising: set[str] = set()
        self._stored: list[tuple[int, Stored]] = []

    async def run(self, tx: Tx, post: PostCommit) -> list[IngestResult]:
        events, start = self._events, self._start
        first: dict[EventKey, int] = {}
        units_seen: set[str] = set()
        copies: dict[int, int] = {}
        for n, ev in enumerate(events):
            if n and n % LOOP_SHARE == 0:
                await asyncio.sleep(0)  # a big batch never holds the event loop for long
            key = (ev.device_id, ev.event_id)
            if n in start.busy:
                self._results[n] = IngestResult("rejected", error=f"internal error: {start.busy_error}")
            elif n in start.new:
                first[key] = n
                if await self._noted(tx, post, n, ev):
                    units_seen.add(ev.device_id)
                    continue
                await self.flush(tx, post)
                if ev.device_id in units_seen:  # an earlier event of this batch may have changed its row
                    device = await self._alone.seen(tx, ev)
                else:
                    device = start.devices.get(ev.device_id)
                    units_seen.add(ev.device_id)
                self._results[n] = await self._alone.apply_new(tx, post, ev, device, self._links)
                looked = self._open.candidates.get(n)
                self._open.changed(None if looked is None else looked[0])
            elif key in first:  # a repeat of an event earlier in this batch: answered once it is stored
                copies[n] = first[key]
            else:
                alert_id = start.earlier.get(key)
                self._results[n] = IngestResult(
                    "duplicate", alert_id=None if alert_id is None else str(alert_id)
                )
        await self.flush(tx, post)
        if self._links:
            await self._store.link_events(tx, self._links)
        for n, original in copies.items():
            self._results[n] = IngestResult("duplicate", alert_id=self._result(original).alert_id)
        return [self._result(n) for n in range(len(events))]

    def _result(self, n: int) -> IngestResult:
        result = self._results[n]
        assert result is not None, "every event of the batch is answered"
        return result

    def _candidates(self) -> dict[int, tuple[str, Looked]]:
        """The new events whose key is looked up, each the first new event of its unit in the batch (a
        later one reads its unit again, so is handled on its own), by index."""
        candidates: dict[int, tuple[str, Looked]] = {}
        units: set[str] = set()
        for n in sorted(self._start.new):
            ev = self._events[n]
            if ev.device_id in units:
                continue
            units.add(ev.device_id)
            device = self._registered(ev)
            looked = looked_up(ev, device["resident_id"] if device is not None else None)
            if looked is not None:
                candidates[n] = looked
        return candidates

    def _registered(self, ev: DeviceEvent) -> Row | None:
        """The event's unit as read at the start of the batch, when registered and active."""
        device = self._start.devices.get(ev.device_id)
        return device if device is not None and device["status"] == "active" else None

    async def _noted(self, tx: Tx, post: PostCommit, n: int, ev: DeviceEvent) -> bool:
        """Note event ``n`` to be written with others, when it can be; False: handle it on its own."""
        looked = self._open.candidates.get(n)
        if looked is None:
            return False
        key, why = looked
        if key in self._raising:
            # Write what is noted before reading this key again: raised by an event noted earlier, it
            # is then found open, and joined. (Any other key read now, with noted raises of its own
            # still to write, is read again after they are: writing a raise marks its key changed.)
            await self.flush(tx, post)
        target = await self._open.of(tx, n)
        device = self._registered(ev)
        if why is Looked.HEARTBEAT:
            if target is not None:
                return False  # it clears the unit's silent-unit alert: on its own
            self._results[n] = IngestResult("accepted")
            self._stored.append((n, Stored(ev, device, None)))
            return True
        # Noted joins and noted raises are written in the order they came (a raise's hooks may write
        # on an alert a join writes on too: flood grouping), each run of one kind together.
        if target is not None:
            await self._write_raises(tx, post)
            self._join(post, n, ev, device, target)
            return True
        await self._write_repeats(tx)
        priority = priority_of(ev.type)
        assert priority is not None, "only types that raise are looked up to raise"
        resident_id = device["resident_id"] if device is not None else None
        alert = new_alert(ev, device, resident_id, priority, is_test_alarm(ev, device))
        self._raises.append(_Raise(n, alert, device))
        self._raising.add(key)
        return True

    def _join(self, post: PostCommit, n: int, ev: DeviceEvent, device: Row | None, alert: Row) -> None:
        """Event ``n`` joins ``alert``: a repeat, written with the others."""
        alert_id = int(alert["id"])
        repeat = Repeat(alert_id, _now(), f"device:{ev.device_id}", str(source_of(ev)), _j(event_detail(ev)))
        self._repeats.append(repeat)
        post.changes.append(
            AlertChange(str(alert_id), AuditAction.REPEAT, int(alert["priority"]), alert["state"])
        )
        self._links.append((ev.device_id, ev.event_id, alert_id))
        self._results[n] = IngestResult("accepted", alert_id=str(alert_id))
        self._stored.append((n, Stored(ev, device, alert_id)))

    async def flush(self, tx: Tx, post: PostCommit) -> None:
        """Write what was noted (joins or raises: one kind is pending at a time), then run the noted
        events' hooks."""
        await self._write_repeats(tx)
        await self._write_raises(tx, post)
        if self._stored:
            stored, self._stored = sorted(self._stored, key=lambda item: item[0]), []
            await self._event_hooks(tx, post, [s for _, s in stored])

    async def _write_repeats(self, tx: Tx) -> None:
        if self._repeats:
            repeats, self._repeats = self._repeats, []
            await self._store.add_repeats(tx, repeats)

    async def _write_raises(self, tx: Tx, post: PostCommit) -> None:
        if self._raises:
            pending, self._raises = self._raises, []
            raised, self._raising = self._raising, set()
            await self._raise(tx, post, pending)
            for key in raised:
                self._open.changed(key)

    async def _raise(self, tx: Tx, post: PostCommit, pending: list[_Raise]) -> None:
        """Insert the noted raises' alerts, log them, run the raise hooks and the call-backs."""
        now = _now()
        rows = await self._store.insert_alerts(tx, [p.alert for p in pending], now)
        raised = [(p, rows[p.alert.open_key]) for p in pending if p.alert.open_key in rows]
        late = [p for p in pending if p.alert.open_key not in rows]
        await self._store.log_actions(
            tx,
            post,
            [
                LogEntry(row, AuditAction.RAISED, p.alert.actor, p.alert.source, p.alert.raised_detail, now)
                for p, row in raised
            ],
        )
        items = [Raised(row, p.alert.event) for p, row in raised]
        for one, many in self._store.raise_hook_pairs:
            if many is not None:
                await many(tx, post, items)
            else:
                for item in items:
                    await one(tx, post, item.alert, item.event)
        await self._call_backs(
            tx,
            post,
            [(p, row) for p, row in raised if wants_call_back(p.alert.event, bool(p.alert.test))],
            now,
        )
        for p, row in raised:
            alert_id = int(row["id"])
            ev = p.alert.event
            self._results[p.n] = IngestResult("accepted", alert_id=str(alert_id))
            self._links.append((ev.device_id, ev.event_id, alert_id))
            self._stored.append((p.n, Stored(ev, p.device, alert_id)))
        if late:
            await self._join_late(tx, post, late)

    async def _join_late(self, tx: Tx, post: PostCommit, late: list[_Raise]) -> None:
        """Raises whose key another node raised a moment ago (its commit came first): they join it, as
        one by one would; one whose alert is already gone again is handled on its own."""
        opened = await self._store.lock_open_alerts(tx, sorted({p.alert.open_key for p in late}))
        for p in late:
            alert = opened.get(p.alert.open_key)
            if alert is not None:
                self._join(post, p.n, p.alert.event, p.device, alert)
        await self._write_repeats(tx)
        for p in late:
            if p.alert.open_key not in opened:
                self._results[p.n] = await self._alone.apply_new(
                    tx, post, p.alert.event, p.device, self._links
                )

    async def _call_backs(
        self, tx: Tx, post: PostCommit, raised: list[tuple[_Raise, Row]], now: float
    ) -> None:
        """Tell each new call for help's unit to call the centre (as one by one: :func:`call_back`)."""
        raised = [(p, row) for p, row in raised if not p.alert.test]
        if not raised:
            return
        wanted = sorted(
            {
                str(p.alert.resident_id)
                for p, _ in raised
                if needs_resident_unit(p.device, p.alert.resident_id)
            }
        )
        units = await self._store.resident_units(tx, wanted) if wanted else {}
        commands: list[OutboxCommand] = []
        entries: list[LogEntry] = []
        for p, row in raised:
            resident_unit = units.get(str(p.alert.resident_id)) if p.alert.resident_id is not None else None
            plan = call_back(p.alert.event, p.device, resident_unit, self._outbox.in_band)
            args: dict[str, Any] = {"alert_id": str(row["id"])}
            if plan.kind is CallBackKind.NO_UNIT:
                entries.append(
                    LogEntry(
                        row, AuditAction.NO_UNIT_TO_CALL, "system", Source.SYSTEM, dict(NO_UNIT_DETAIL), now
                    )
                )
                continue
            command = OutboxCommand(
                plan.channel, plan.target, "call_centre", args, int(row["id"]), plan.result
            )
            commands.append(command)
            if command.closed_with is not None:
                detail = command.sent_detail
                entries.append(LogEntry(row, AuditAction.COMMAND_SENT, "system", Source.SYSTEM, detail, now))
        await self._outbox.add_many(tx, post, commands, now)
        await self._store.log_actions(tx, post, entries)

    async def _event_hooks(self, tx: Tx, post: PostCommit, stored: list[Stored]) -> None:
        for one, many in self._store.event_hook_pairs:
            if many is not None:
                await many(tx, post, stored)
            else:
                for s in stored:
                    await one(tx, post, s.event, s.device, s.alert_id)
