"""Intake in the store: what each device event does, in one transaction per batch.

An event is recorded under its idempotency key ``(device_id, event_id)``; a new one raises an alert, joins
the open one, clears one, or confirms a command, and the features' hooks run in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.lifecycle import Outcome, Source
from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.alerts import Alerts
from alarm_centre.store.outbox import Outbox
from alarm_centre.store.tx import Database, EventFailed, EventHook, PostCommit, RaiseHook, RetryLater, Row, Tx
from alarm_centre.store.tx import dumps as _j
from alarm_centre.store.tx import now as _now
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS
from devices.vocabulary import (
    CLEARS,
    EventType,
    Priority,
    alert_key,
    help_key,
    is_help,
    priority_of,
    restore_target,
)

log = logging.getLogger(__name__)


#: An event's idempotency key.
EventKey = tuple[str, str]


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


class IngestDatabase(Database, Protocol):
    """What storing events needs of the store beyond transactions: the per-unit claim and the hooks."""

    @property
    def raise_hooks(self) -> tuple[RaiseHook, ...]: ...
    @property
    def event_hooks(self) -> tuple[EventHook, ...]: ...
    async def claim_unit(self, tx: Tx, device_id: str) -> None: ...
    async def start_batch(self, tx: Tx, events: Sequence[DeviceEvent]) -> BatchStart | None: ...
    async def link_events(self, tx: Tx, links: Sequence[tuple[str, str, int]]) -> None: ...
    async def lock_open_alerts(self, tx: Tx, keys: Sequence[str]) -> dict[str, Row]: ...
    async def add_repeats(self, tx: Tx, repeats: Sequence[Repeat]) -> None: ...


@dataclass(frozen=True)
class Repeat:
    """A new event joining an open alert: its repeat is counted and logged on the alert's timeline."""

    alert_id: int
    at: float
    actor: str
    source: str
    detail: str


class Repeats:
    """A batch's joins of open alerts, found and written set-based (PostgreSQL).

    The open alerts of the batch's keys are read (and row-locked, as the join's UPDATE would) in one
    statement; a new event whose key has one joins it, and the joins are written together (two
    statements) before anything else the batch does, so every timeline keeps its order. An event
    handled on its own may change what is open: after a raise its key is read again when needed; after
    anything else (a restore, a heartbeat, a unit's second event) every key is.
    """

    def __init__(self, store: IngestDatabase, candidates: dict[int, str]) -> None:
        self._store = store
        #: Events that would raise or join, by index in the batch: their alert key.
        self._candidates = candidates
        self._open: dict[str, Row] | None = None
        self._stale: set[str] = set()
        self._pending: list[Repeat] = []

    async def target(self, tx: Tx, n: int) -> Row | None:
        """The open alert event ``n`` joins, or ``None`` (it is handled on its own)."""
        key = self._candidates.get(n)
        if key is None:
            return None
        if self._open is None or key in self._stale:
            await self.flush(tx)
            keys = sorted({k for i, k in self._candidates.items() if i >= n})
            self._open = await self._store.lock_open_alerts(tx, keys)
            self._stale.clear()
        return self._open.get(key)

    def add(self, repeat: Repeat) -> None:
        self._pending.append(repeat)

    async def flush(self, tx: Tx) -> None:
        """Write the joins noted so far (before an event is handled on its own, and at the end)."""
        if self._pending:
            pending, self._pending = self._pending, []
            await self._store.add_repeats(tx, pending)

    def handled_alone(self, n: int) -> None:
        """Event ``n`` was handled on its own: forget what it may have changed."""
        key = self._candidates.get(n)
        if key is not None:
            self._stale.add(key)  # it raised (or joined) an alert of its own key
        else:
            self._open = None


class Ingest:
    """Device events into alerts (``store.intake``)."""

    def __init__(self, store: IngestDatabase, alerts: Alerts, outbox: Outbox) -> None:
        self._store = store
        self._alerts = alerts
        self._outbox = outbox

    async def store(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """Store a batch of device events in one transaction; one result per event, in order.

        The batch is tried whole first: on PostgreSQL set-based (:class:`BatchStart`, :class:`Repeats`),
        so what costs a round trip per event is only what a raise, a restore or a command result does.
        Should one event fail, the batch is stored again event by event with a savepoint around each,
        so the poisoned one is rejected and the rest are kept. (Savepoints cost PostgreSQL two round
        trips per event, so they are only paid for when needed.)
        """

        async def whole(tx: Tx, post: PostCommit) -> list[IngestResult]:
            try:
                start = await self._store.start_batch(tx, events)
                if start is not None:
                    return await self._set_based(tx, post, events, start)
                return [await self.apply_event(tx, post, event) for event in events]
            except Exception as exc:
                raise EventFailed from exc  # rolls the batch back; see one_by_one

        async def one_by_one(tx: Tx, post: PostCommit) -> list[IngestResult]:
            results = []
            for n, event in enumerate(events):
                savepoint = f"ev{n}"
                await tx.savepoint(savepoint)
                try:
                    results.append(await self.apply_event(tx, post, event))
                    await tx.release(savepoint)
                except Exception as exc:  # one poisoned event must not block its batch
                    if isinstance(exc, RetryLater):
                        log.info("event %s/%s must wait: %s", event.device_id, event.event_id, exc)
                    else:
                        log.exception("event %s/%s could not be stored", event.device_id, event.event_id)
                    await tx.rollback_to(savepoint)
                    await tx.release(savepoint)
                    results.append(IngestResult("rejected", error=f"internal error: {type(exc).__name__}"))
            return results

        try:
            result: list[IngestResult] = await self._store.transaction(whole)
        except EventFailed:
            result = await self._store.transaction(one_by_one)
        return result

    async def _set_based(
        self, tx: Tx, post: PostCommit, events: Sequence[DeviceEvent], start: BatchStart
    ) -> list[IngestResult]:
        """The batch after :class:`BatchStart`: only what a new event does is left per event, and the
        events' links to their alerts are written together at the end."""
        results: list[IngestResult] = []
        first: dict[EventKey, int] = {}
        units_seen: set[str] = set()
        links: list[tuple[str, str, int]] = []
        repeats = Repeats(self._store, self._join_candidates(events, start))
        for n, ev in enumerate(events):
            key = (ev.device_id, ev.event_id)
            if n in start.busy:
                results.append(IngestResult("rejected", error=f"internal error: {start.busy_error}"))
            elif n in start.new:
                first[key] = n
                target = await repeats.target(tx, n)
                if target is not None:
                    device = start.devices.get(ev.device_id)
                    units_seen.add(ev.device_id)
                    results.append(await self._join_noted(tx, post, ev, device, target, repeats, links))
                    continue
                await repeats.flush(tx)
                if ev.device_id in units_seen:  # an earlier event of this batch may have changed its row
                    device = await self._seen(tx, ev)
                else:
                    device = start.devices.get(ev.device_id)
                    units_seen.add(ev.device_id)
                results.append(await self._apply_new(tx, post, ev, device, links))
                repeats.handled_alone(n)
            elif key in first:  # a repeat of an event earlier in this batch
                results.append(IngestResult("duplicate", alert_id=results[first[key]].alert_id))
            else:
                alert_id = start.earlier.get(key)
                results.append(
                    IngestResult("duplicate", alert_id=None if alert_id is None else str(alert_id))
                )
        await repeats.flush(tx)
        if links:
            await self._store.link_events(tx, links)
        return results

    def _join_candidates(self, events: Sequence[DeviceEvent], start: BatchStart) -> dict[int, str]:
        """The new events that would raise an alert or join one, each the first new event of its unit in
        the batch (a later one reads its unit again), by index: their alert key."""
        candidates: dict[int, str] = {}
        units: set[str] = set()
        for n in sorted(start.new):
            ev = events[n]
            if ev.device_id in units:
                continue
            units.add(ev.device_id)
            if not _raises(ev.type) or ev.source == "system":
                continue
            device = start.devices.get(ev.device_id)
            registered = device is not None and device["status"] == "active"
            resident_id = device["resident_id"] if device is not None and registered else None
            candidates[n] = alert_key(ev.device_id, resident_id, ev.type, ev.data)
        return candidates

    async def _join_noted(
        self,
        tx: Tx,
        post: PostCommit,
        ev: DeviceEvent,
        device: Row | None,
        alert: Row,
        repeats: Repeats,
        links: list[tuple[str, str, int]],
    ) -> IngestResult:
        """A new event joining an open alert, noted for :class:`Repeats` to write (as
        :meth:`_raise_or_join` does one by one); the event hooks run as for any new event."""
        now = _now()
        detail: dict[str, Any] = {"event_id": ev.event_id, "type": ev.type.value}
        if ev.data:
            detail["data"] = ev.data
        source = _source_of(ev)
        repeats.add(Repeat(int(alert["id"]), now, f"device:{ev.device_id}", str(source), _j(detail)))
        post.changes.append(
            AlertChange(str(alert["id"]), AuditAction.REPEAT, int(alert["priority"]), alert["state"])
        )
        registered = device is not None and device["status"] == "active"
        alert_id = int(alert["id"])
        for hook in self._store.event_hooks:
            await hook(tx, post, ev, device if registered else None, alert_id)
        links.append((ev.device_id, ev.event_id, alert_id))
        return IngestResult("accepted", alert_id=str(alert_id))

    async def apply_event(self, tx: Tx, post: PostCommit, ev: DeviceEvent) -> IngestResult:
        """Store one event on its own (a batch's second try, event by event, and SQLite)."""
        await self._store.claim_unit(tx, ev.device_id)
        received = ev.received_at.timestamp()
        # Record the event and learn whether it is new in one statement (the idempotency key).
        stored = await tx.fetchone(
            "INSERT INTO events (device_id, event_id, type, ts, received_at, source, test, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, event_id) DO NOTHING RETURNING event_id",
            ev.device_id,
            ev.event_id,
            ev.type.value,
            ev.ts.timestamp() if ev.ts else None,
            received,
            ev.source,
            int(ev.test),
            _j(ev.data),
        )
        if stored is None:
            seen = await tx.fetchone(
                "SELECT alert_id FROM events WHERE device_id = ? AND event_id = ?", ev.device_id, ev.event_id
            )
            alert_id = seen["alert_id"] if seen is not None else None
            return IngestResult("duplicate", alert_id=None if alert_id is None else str(alert_id))
        return await self._apply_new(tx, post, ev, await self._seen(tx, ev), None)

    async def _seen(self, tx: Tx, ev: DeviceEvent) -> Row | None:
        """The event's unit as it was, marked seen now (when registered)."""
        device = await tx.fetchone("SELECT * FROM devices WHERE id = ?", ev.device_id)
        if device is not None and device["status"] == "active":
            await tx.execute(
                "UPDATE devices SET last_seen_at = ?, online = 1 WHERE id = ?",
                ev.received_at.timestamp(),
                ev.device_id,
            )
        return device

    async def _apply_new(
        self,
        tx: Tx,
        post: PostCommit,
        ev: DeviceEvent,
        device: Row | None,
        links: list[tuple[str, str, int]] | None,
    ) -> IngestResult:
        """What a newly recorded event does. Its link to its alert is written now, or added to
        ``links`` for the batch to write together."""
        received = ev.received_at.timestamp()
        now = _now()
        registered = device is not None and device["status"] == "active"
        in_test_mode = bool(
            registered
            and device is not None
            and device["test_mode_until"]
            and device["test_mode_until"] > received
        )
        test = ev.test and in_test_mode
        alert_id = await self._event_effect(tx, post, ev, device if registered else None, test, now)
        for hook in self._store.event_hooks:
            await hook(tx, post, ev, device if registered else None, alert_id)
        if alert_id is not None and links is not None:
            links.append((ev.device_id, ev.event_id, alert_id))
        elif alert_id is not None:
            await tx.execute(
                "UPDATE events SET alert_id = ? WHERE device_id = ? AND event_id = ?",
                alert_id,
                ev.device_id,
                ev.event_id,
            )
        return IngestResult("accepted", alert_id=None if alert_id is None else str(alert_id))

    async def _event_effect(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None, test: bool, now: float
    ) -> int | None:
        """What one new event does to alerts and the outbox; returns the alert it belongs to."""
        source = _source_of(ev)
        actor = f"device:{ev.device_id}"
        resident_id = device["resident_id"] if device is not None else None
        if ev.type is EventType.HEARTBEAT:
            cleared = await self._alerts.open_alert(
                tx, alert_key(ev.device_id, resident_id, EventType.NO_HEARTBEAT, {})
            )
            if cleared is not None:
                await self._alerts.system_resolve(
                    tx, post, cleared, Outcome.CLEARED_BY_DEVICE, "heartbeat resumed", now
                )
            return None
        if ev.type is EventType.CMD_RESULT:
            return await self._command_result(tx, post, ev, actor, source, now)
        if ev.type in (EventType.CALL_CONNECTED, EventType.CANCEL):
            target = await self._alerts.open_alert(tx, help_key(ev.device_id, resident_id))
            if target is None:
                return None
            action = (
                AuditAction.CALL_CONNECTED
                if ev.type is EventType.CALL_CONNECTED
                else AuditAction.RESIDENT_CANCELLED
            )
            await self._alerts.log_action(
                tx, post, target, action, actor, source, {"event_id": ev.event_id, **ev.data}, now
            )
            return int(target["id"])
        if ev.type is EventType.RESTORED or ev.type in CLEARS:
            return await self._restore(tx, post, ev, resident_id, now)
        priority = priority_of(ev.type)
        if priority is None:
            return None
        return await self._raise_or_join(tx, post, ev, device, resident_id, priority, test, now)

    async def _restore(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, resident_id: str | None, now: float
    ) -> int | None:
        """The unit reports a condition ended (``mains_restored``, ``restored``): a technical alert of that
        type resolves (``cleared_by_device``); a call for help or an urgent alert stays open for an
        operator, with the restore on its timeline; with no open alert the event is only recorded."""
        restores = restore_target(ev.type, ev.data)
        if restores is None:
            log.warning(
                "restore %s/%s names no alert type (keys %s): recorded only",
                ev.device_id,
                ev.event_id,
                sorted(ev.data),  # the keys, not the values: an SMS restore carries its text and sender
            )
            return None
        target = await self._alerts.open_alert(tx, alert_key(ev.device_id, resident_id, restores, ev.data))
        if target is None:
            log.info("%s restored %s with no open alert: recorded only", ev.device_id, restores.value)
            return None
        actor, source = f"device:{ev.device_id}", _source_of(ev)
        if priority_of(restores) is Priority.TECHNICAL:
            reason = ev.type.value if ev.type in CLEARS else f"the unit reports {restores.value} restored"
            await self._alerts.system_resolve(
                tx, post, target, Outcome.CLEARED_BY_DEVICE, reason, now, actor=actor, source=source
            )
        else:
            detail: dict[str, Any] = {
                "event_id": ev.event_id,
                "restores": restores.value,
                "reason": f"the unit reports {restores.value} restored; an operator must still resolve it",
            }
            if ev.data:
                detail["data"] = ev.data
            await self._alerts.log_action(
                tx, post, target, AuditAction.UNIT_RESTORED, actor, source, detail, now
            )
        return int(target["id"])

    async def _raise_or_join(
        self,
        tx: Tx,
        post: PostCommit,
        ev: DeviceEvent,
        device: Row | None,
        resident_id: str | None,
        priority: Priority,
        test: bool,
        now: float,
    ) -> int:
        source = _source_of(ev)
        actor = f"device:{ev.device_id}"
        key = alert_key(ev.device_id, resident_id, ev.type, ev.data)
        detail: dict[str, Any] = {"event_id": ev.event_id, "type": ev.type.value}
        if ev.data:
            detail["data"] = ev.data
        skew = ev.clock_skew_s
        clock_skew = ev.clock_skewed
        data: dict[str, Any] = {"source": ev.source}
        if ev.ts is not None:
            data["device_ts"] = ev.ts.timestamp()
        if clock_skew:
            data["clock_skew_s"] = round(skew or 0.0, 1)
        if ev.test and not test:
            data["test_flag_ignored"] = "the unit is not in test mode, so this is handled as real"
        if ev.unregistered_hint:
            data["unregistered_hint"] = ev.unregistered_hint
        if ev.data:
            data["event_data"] = ev.data
        unregistered = device is None
        row = await tx.fetchone(
            "INSERT INTO alerts (device_id, resident_id, type, priority, state, open_key, raised_at, "
            "repeat_count, test, unregistered, clock_skew, data, updated_at) "
            "VALUES (?, ?, ?, ?, 'raised', ?, ?, 0, ?, ?, ?, ?, ?) "
            # One open alert per key: a repeat conflicts and joins the open alert below.
            "ON CONFLICT (open_key) DO NOTHING RETURNING *",
            ev.device_id,
            resident_id,
            ev.type.value,
            int(priority),
            key,
            ev.received_at.timestamp(),
            int(test),
            int(unregistered),
            int(clock_skew),
            _j(data),
            now,
        )
        if row is None:
            open_alert = await self._alerts.open_alert(tx, key)
            assert open_alert is not None, "the conflicting open alert is visible to this transaction"
            await tx.execute(
                "UPDATE alerts SET repeat_count = repeat_count + 1, updated_at = ? WHERE id = ?",
                now,
                open_alert["id"],
            )
            await self._alerts.log_action(
                tx, post, open_alert, AuditAction.REPEAT, actor, source, detail, now
            )
            return int(open_alert["id"])
        await self._alerts.log_action(
            tx,
            post,
            row,
            AuditAction.RAISED,
            f"device:{ev.device_id}",
            source,
            {**detail, "unregistered": unregistered, "test": test},
            now,
        )
        for hook in self._store.raise_hooks:
            await hook(tx, post, row, ev)
        # A call for help that is itself a phone call to the centre (source "phone") needs no call back.
        if is_help(ev.type) and not test and ev.source != "phone":
            await self._command_call_centre(tx, post, row, ev, device, resident_id, now)
        return int(row["id"])

    async def _command_call_centre(
        self,
        tx: Tx,
        post: PostCommit,
        alert: Row,
        ev: DeviceEvent,
        device: Row | None,
        resident_id: str | None,
        now: float,
    ) -> None:
        """Ask the resident's unit to open a speech call to the centre (sent from the outbox)."""
        target: Row | None = None
        if device is not None and device["kind"] in UNIT_KINDS:
            target = device
        elif resident_id is not None:
            target = await tx.fetchone(
                "SELECT * FROM devices WHERE resident_id = ? AND status = 'active' "
                f"AND kind IN ({', '.join('?' for _ in UNIT_KINDS)}) ORDER BY created_at LIMIT 1",
                resident_id,
                *UNIT_KINDS,
            )
        in_band = None if target is None else self._outbox.in_band.get((target["channel"], "call_centre"))
        own_unit = target is not None and (target["id"], target["channel"]) == (ev.device_id, ev.source)
        if in_band is not None and target is not None and own_unit:
            # The answer to this very event tells the unit to call (SCAIP): closed here, logged sent.
            await self._outbox.add_in_band(
                tx,
                post,
                alert,
                target["channel"],
                target["id"],
                "call_centre",
                {"alert_id": str(alert["id"])},
                in_band,
                now,
            )
        elif target is not None:
            await self._outbox.add_command(
                tx,
                post,
                target["channel"],
                target["id"],
                "call_centre",
                {"alert_id": str(alert["id"])},
                int(alert["id"]),
                now,
            )
        elif device is None and ev.source == "mqtt":
            # An unregistered unit still gets its call back: it spoke to us over MQTT, so it can hear us.
            await self._outbox.add_command(
                tx,
                post,
                "mqtt",
                ev.device_id,
                "call_centre",
                {"alert_id": str(alert["id"])},
                int(alert["id"]),
                now,
            )
        else:
            await self._alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.NO_UNIT_TO_CALL,
                "system",
                Source.SYSTEM,
                {"reason": "no registered unit for this resident; call the resident back"},
                now,
            )

    async def _command_result(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, actor: str, source: str, now: float
    ) -> int | None:
        cmd_id = ev.data.get("cmd_id")
        if not isinstance(cmd_id, str):
            return None
        item = await self._outbox.confirm(tx, ev.device_id, cmd_id, ev.data, now)
        if item is None or item["alert_id"] is None:
            return None
        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", item["alert_id"])
        if alert is None:
            return None
        await self._outbox.answered(tx, post, alert, item, now)  # the send comes first on the timeline
        command = json.loads(item["payload"]).get("cmd")
        await self._alerts.log_action(
            tx,
            post,
            alert,
            AuditAction.CMD_RESULT,
            actor,
            source,
            {"cmd": command, **{k: v for k, v in ev.data.items()}},
            now,
        )
        return int(alert["id"])


def _raises(kind: EventType) -> bool:
    """Whether a new event of this type raises an alert (or joins the open one): what
    :meth:`Ingest._event_effect` sends to :meth:`Ingest._raise_or_join`."""
    handled_otherwise = (
        EventType.HEARTBEAT,
        EventType.CMD_RESULT,
        EventType.CALL_CONNECTED,
        EventType.CANCEL,
    )
    if kind in handled_otherwise or kind is EventType.RESTORED or kind in CLEARS:
        return False
    return priority_of(kind) is not None


def _source_of(ev: DeviceEvent) -> str:
    sources = {"voice": Source.VOICE, "phone": Source.VOICE, "sms": Source.SMS, "system": Source.SYSTEM}
    return sources.get(ev.source, Source.DEVICE)
