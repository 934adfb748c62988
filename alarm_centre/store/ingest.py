"""Intake in the store: what each device event does, in one transaction per batch.

An event is recorded under its idempotency key ``(device_id, event_id)``; a new one raises an alert, joins
the open one, clears one, or confirms a command, and the features' hooks run in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.intake import IngestResult
from alarm_centre.alerts.lifecycle import Outcome, Source
from alarm_centre.store.alerts import Alerts
from alarm_centre.store.ingest_sets import IngestDatabase, Link, SetBasedBatch
from alarm_centre.store.outbox import Outbox
from alarm_centre.store.raising import (
    NO_UNIT_DETAIL,
    CallBackKind,
    call_back,
    is_test_alarm,
    needs_resident_unit,
    new_alert,
    source_of,
    wants_call_back,
)
from alarm_centre.store.tx import EventFailed, PostCommit, RetryLater, Row, Tx
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
    priority_of,
    restore_target,
)

log = logging.getLogger(__name__)


class Ingest:
    """Device events into alerts (``store.intake``)."""

    def __init__(self, store: IngestDatabase, alerts: Alerts, outbox: Outbox) -> None:
        self._store = store
        self._alerts = alerts
        self._outbox = outbox

    async def store(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """Store a batch of device events in one transaction; one result per event, in order.

        The batch is tried whole first: on PostgreSQL set-based (:mod:`alarm_centre.store.ingest_sets`),
        so what costs a round trip per event is only what a restore, a cancel or a command result does.
        Should one event fail, the batch is stored again event by event with a savepoint around each,
        so the poisoned one is rejected and the rest are kept. (Savepoints cost PostgreSQL two round
        trips per event, so they are only paid for when needed.)
        """

        async def whole(tx: Tx, post: PostCommit) -> list[IngestResult]:
            try:
                start = await self._store.start_batch(tx, events)
                if start is not None:
                    return await SetBasedBatch(self._store, self._outbox, self, events, start).run(tx, post)
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
        return await self.apply_new(tx, post, ev, await self.seen(tx, ev), None)

    async def seen(self, tx: Tx, ev: DeviceEvent) -> Row | None:
        """The event's unit as it was, marked seen now (when registered)."""
        device = await tx.fetchone("SELECT * FROM devices WHERE id = ?", ev.device_id)
        if device is not None and device["status"] == "active":
            await tx.execute(
                "UPDATE devices SET last_seen_at = ?, online = 1 WHERE id = ?",
                ev.received_at.timestamp(),
                ev.device_id,
            )
        return device

    async def apply_new(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None, links: list[Link] | None
    ) -> IngestResult:
        """What a newly recorded event does. Its link to its alert is written now, or added to
        ``links`` for the batch to write together."""
        now = _now()
        registered = device is not None and device["status"] == "active"
        test = is_test_alarm(ev, device if registered else None)
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
        source = source_of(ev)
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
        actor, source = f"device:{ev.device_id}", source_of(ev)
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
        new = new_alert(ev, device, resident_id, priority, test)
        row = await tx.fetchone(
            "INSERT INTO alerts (device_id, resident_id, type, priority, state, open_key, raised_at, "
            "repeat_count, test, unregistered, clock_skew, data, updated_at) "
            "VALUES (?, ?, ?, ?, 'raised', ?, ?, 0, ?, ?, ?, ?, ?) "
            # One open alert per key: a repeat conflicts and joins the open alert below.
            "ON CONFLICT (open_key) DO NOTHING RETURNING *",
            new.device_id,
            new.resident_id,
            new.type,
            new.priority,
            new.open_key,
            new.raised_at,
            new.test,
            new.unregistered,
            new.clock_skew,
            _j(new.data),
            now,
        )
        if row is None:
            open_alert = await self._alerts.open_alert(tx, new.open_key)
            assert open_alert is not None, "the conflicting open alert is visible to this transaction"
            await tx.execute(
                "UPDATE alerts SET repeat_count = repeat_count + 1, updated_at = ? WHERE id = ?",
                now,
                open_alert["id"],
            )
            await self._alerts.log_action(
                tx, post, open_alert, AuditAction.REPEAT, new.actor, new.source, new.detail, now
            )
            return int(open_alert["id"])
        await self._alerts.log_action(
            tx, post, row, AuditAction.RAISED, new.actor, new.source, new.raised_detail, now
        )
        for hook in self._store.raise_hooks:
            await hook(tx, post, row, ev)
        if wants_call_back(ev, test):
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
        resident_unit: Row | None = None
        if needs_resident_unit(device, resident_id):
            resident_unit = await tx.fetchone(
                "SELECT * FROM devices WHERE resident_id = ? AND status = 'active' "
                f"AND kind IN ({', '.join('?' for _ in UNIT_KINDS)}) ORDER BY created_at LIMIT 1",
                resident_id,
                *UNIT_KINDS,
            )
        plan = call_back(ev, device, resident_unit, self._outbox.in_band)
        args = {"alert_id": str(alert["id"])}
        if plan.kind is CallBackKind.IN_BAND and plan.result is not None:
            # The answer to this very event tells the unit to call (SCAIP): closed here, logged sent.
            await self._outbox.add_in_band(
                tx, post, alert, plan.channel, plan.target, "call_centre", args, plan.result, now
            )
        elif plan.kind is CallBackKind.COMMAND:
            await self._outbox.add_command(
                tx, post, plan.channel, plan.target, "call_centre", args, int(alert["id"]), now
            )
        else:
            await self._alerts.log_action(
                tx,
                post,
                alert,
                AuditAction.NO_UNIT_TO_CALL,
                "system",
                Source.SYSTEM,
                dict(NO_UNIT_DETAIL),
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
