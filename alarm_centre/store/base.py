"""The alert store: domain logic written once against a small transaction interface.

Each backend (SQLite here, PostgreSQL in ``postgres.py``) supplies :class:`Tx` and the ``_write`` /
``_read`` context managers; everything about what an event does to alerts lives in this module.
After each commit the store tells its listeners what changed (console streams, metrics) and wakes the
outbox (side effects run only from committed state).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, Self, TypeVar

from pydantic import ValidationError

from alarm_centre.ids import MAX_ROW_ID, row_id
from alarm_centre.intake import IngestResult
from alarm_centre.lifecycle import Action as LifecycleAction
from alarm_centre.lifecycle import AlertState, IllegalTransition, Outcome, Source, next_state
from alarm_centre.model import Alert, AlertChange, OutboxItem, Role, TimelineEntry, User
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS, Device, Resident, errors_of
from devices.strict_json import column_text as _j
from devices.vocabulary import CLEARS, EventType, Priority, help_key, is_help, priority_of

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
COMMAND_RETRY_S = (15.0, 30.0, 60.0, 120.0, 300.0)
COMMAND_MAX_ATTEMPTS = 8


class Tx(Protocol):
    """One open transaction. SQL uses ``?`` placeholders; backends translate."""

    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchall(self, sql: str, *args: Any) -> list[Row]: ...
    async def savepoint(self, name: str) -> None: ...
    async def release(self, name: str) -> None: ...
    async def rollback_to(self, name: str) -> None: ...


class NotFound(LookupError):
    """No such alert (or user, or device)."""


class Conflict(Exception):
    """The alert is held by someone else, or the request clashes with existing state."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class RetryLater(RuntimeError):
    """An event that cannot be stored just now but can be in a moment (another node holds its unit)."""


class _EventFailed(Exception):
    """One event of a batch failed while it was tried whole."""


class InvalidRequest(ValueError):
    """A request the store refuses on its content (an unknown outcome code, say)."""


class PostCommit:
    """What a transaction changed, delivered to listeners once it has committed."""

    def __init__(self) -> None:
        self.changes: list[AlertChange] = []
        self.outbox = False
        #: Users whose access changed (signed out, disabled, new role, password or token).
        self.users: set[str] = set()


def hash_token(token: str) -> str:
    """API tokens are 256-bit random values, so a plain SHA-256 is a safe way to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> float:
    return time.time()


def alert_from_row(row: Row) -> Alert:
    return Alert(
        id=str(row["id"]),
        device_id=row["device_id"],
        resident_id=row["resident_id"],
        type=row["type"],
        priority=int(row["priority"]),
        state=AlertState(row["state"]),
        raised_at=row["raised_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        outcome=row["outcome"],
        note=row["note"],
        repeat_count=int(row["repeat_count"]),
        test=bool(row["test"]),
        unregistered=bool(row["unregistered"]),
        clock_skew=bool(row["clock_skew"]),
        updated_at=row["updated_at"],
        data=json.loads(row["data"] or "{}"),
    )


def encode_cursor(priority: int, raised_at: float, alert_id: int) -> str:
    raw = _j([priority, raised_at, alert_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        priority, raised_at, alert_id = json.loads(raw)
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise InvalidRequest("cursor is not one this server issued") from exc
    # Only what encode_cursor writes: whole numbers a database column holds and a finite time.
    fits = all(type(n) is int and 0 <= n <= MAX_ROW_ID for n in (priority, alert_id))
    if not fits or type(raised_at) not in (int, float) or not math.isfinite(raised_at):
        raise InvalidRequest("cursor is not one this server issued")
    return priority, float(raised_at), alert_id


STATE_FILTERS: dict[str, tuple[str, ...]] = {
    "open": ("raised", "acknowledged"),
    "raised": ("raised",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": ("raised", "acknowledged", "resolved"),
}

Listener = Callable[[Sequence[AlertChange]], Awaitable[None] | None]
#: Told the names of users whose access changed, after the commit (on every node).
AccessListener = Callable[[Sequence[str]], None]
#: How often a store without a notification channel (SQLite) looks for access changes that another
#: process (``telecare-bridge users disable``) committed. PostgreSQL delivers them by NOTIFY instead.
ACCESS_POLL_S = 0.25
#: Access-change rows are kept this long (a node that was down longer re-reads nothing it needs:
#: its streams ended with it).
ACCESS_KEEP_S = 3600.0
RaiseHook = Callable[["Tx", "PostCommit", Row, DeviceEvent], Awaitable[None]]
EventHook = Callable[["Tx", "PostCommit", DeviceEvent, "Row | None", "int | None"], Awaitable[None]]


class AlertStore:
    """The store's public interface; backends subclass it and provide transactions."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._access_listeners: list[AccessListener] = []
        self._outbox_wakers: list[Callable[[], None]] = []
        self.last_write_error: str | None = None
        #: Called in the transaction after a new alert row is inserted (escalation snapshot, flood grouping),
        #: in the order given to :meth:`add_raise_hook`. Read-only: add hooks with the method.
        self.raise_hooks: tuple[RaiseHook, ...] = ()
        #: Called in the transaction after each newly stored event, with the alert it joined, if any.
        self.event_hooks: tuple[EventHook, ...] = ()
        self._raise_hooks: list[tuple[int, int, RaiseHook]] = []
        self._event_hooks: list[tuple[int, int, EventHook]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # -- backend hooks ---------------------------------------------------------------------------
    def _write(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A read-only view of committed state."""
        raise NotImplementedError

    # -- hooks in the ingest transaction ------------------------------------------------------
    def add_raise_hook(self, hook: RaiseHook, order: int) -> None:
        """Run ``hook`` after each new alert row, lowest ``order`` first (``alarm_centre.host.HookOrder``);
        hooks of equal order run in the order they were added. Adding the same hook twice is a no-op."""
        if hook not in self.raise_hooks:
            self._raise_hooks.append((order, len(self._raise_hooks), hook))
            self.raise_hooks = tuple(h for _, _, h in sorted(self._raise_hooks, key=lambda t: t[:2]))

    def add_event_hook(self, hook: EventHook, order: int) -> None:
        """Run ``hook`` after each newly stored event, lowest ``order`` first; the same hook once."""
        if hook not in self.event_hooks:
            self._event_hooks.append((order, len(self._event_hooks), hook))
            self.event_hooks = tuple(h for _, _, h in sorted(self._event_hooks, key=lambda t: t[:2]))

    # -- listeners -------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Called after each commit that changed alerts, with the changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_outbox_waker(self, waker: Callable[[], None]) -> None:
        """Called after each commit that added work to the outbox."""
        self._outbox_wakers.append(waker)

    def add_access_listener(self, listener: AccessListener) -> None:
        """Called after each commit (on this node or, through the store, another) that changed a
        user's access, with the user names."""
        self._access_listeners.append(listener)

    async def record_access_change(self, tx: Tx, post: PostCommit, name: str) -> None:
        """Note in the transaction that ``name``'s access changed, so their open streams re-check it."""
        now = _now()
        await tx.execute("INSERT INTO access_changes (user_name, changed_at) VALUES (?, ?)", name, now)
        await tx.execute("DELETE FROM access_changes WHERE changed_at < ?", now - ACCESS_KEEP_S)
        post.users.add(name)

    async def follow_access_changes(self) -> None:
        """Hand access changes committed by other processes to the access listeners, until cancelled.

        This base version reads the ``access_changes`` table every :data:`ACCESS_POLL_S` (one indexed
        query per node, not per stream); a store with a notification channel overrides it.
        """
        last: int | None = None  # changes up to here were made before we started following
        while True:
            try:
                async with self.read() as tx:
                    if last is None:
                        row = await tx.fetchone("SELECT COALESCE(MAX(id), 0) AS last FROM access_changes")
                        last = int(row["last"]) if row else 0
                        rows = []
                    else:
                        rows = await tx.fetchall(
                            "SELECT id, user_name FROM access_changes WHERE id > ? ORDER BY id", last)
            except Exception as exc:  # closing or briefly locked: try again next round
                log.debug("could not read access changes: %s", exc)
                rows = []
            if rows:
                last = int(rows[-1]["id"])
                self._tell_access({str(r["user_name"]) for r in rows})
            await asyncio.sleep(ACCESS_POLL_S)

    def _tell_access(self, names: set[str]) -> None:
        for listener in list(self._access_listeners):
            try:
                listener(sorted(names))
            except Exception:
                log.exception("access listener failed")

    async def _after_commit(self, post: PostCommit) -> None:
        if post.users:
            self._tell_access(post.users)
        if post.outbox:
            for wake in self._outbox_wakers:
                wake()
        if post.changes:
            for listener in list(self._listeners):
                try:
                    result = listener(post.changes)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("alert listener failed")

    async def transaction(self, work: Callable[[Tx, PostCommit], Awaitable[Any]]) -> Any:
        """Run ``work(tx, post)`` in one write transaction; listeners hear of ``post`` after the commit.

        Feature modules (registry, escalation, voice, ...) keep their own SQL and call this.
        """
        post = PostCommit()
        try:
            async with self._write() as tx:
                result = await work(tx, post)
        except (NotFound, Conflict, InvalidRequest, IllegalTransition, _EventFailed):
            raise
        except Exception as exc:
            self.last_write_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_write_error = None
        await self._after_commit(post)
        return result

    # -- intake ----------------------------------------------------------------------------------
    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        """Store a batch of device events in one transaction; one result per event, in order.

        The batch is tried whole first. Should one event fail, the batch is stored again with a
        savepoint around each event, so the poisoned one is rejected and the rest are kept. (Savepoints
        cost PostgreSQL two round trips per event, so they are only paid for when needed.)
        """

        async def whole(tx: Tx, post: PostCommit) -> list[IngestResult]:
            results = []
            for event in events:
                try:
                    results.append(await self._apply_event(tx, post, event))
                except Exception as exc:
                    raise _EventFailed from exc  # rolls the batch back; see one_by_one
            return results

        async def one_by_one(tx: Tx, post: PostCommit) -> list[IngestResult]:
            results = []
            for n, event in enumerate(events):
                savepoint = f"ev{n}"
                await tx.savepoint(savepoint)
                try:
                    results.append(await self._apply_event(tx, post, event))
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
            result: list[IngestResult] = await self.transaction(whole)
        except _EventFailed:
            result = await self.transaction(one_by_one)
        return result

    async def _apply_event(self, tx: Tx, post: PostCommit, ev: DeviceEvent) -> IngestResult:
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
        now = _now()
        device = await tx.fetchone("SELECT * FROM devices WHERE id = ?", ev.device_id)
        registered = device is not None and device["status"] == "active"
        in_test_mode = bool(
            registered
            and device is not None
            and device["test_mode_until"]
            and device["test_mode_until"] > received
        )
        test = ev.test and in_test_mode
        if registered:
            await tx.execute(
                "UPDATE devices SET last_seen_at = ?, online = 1 WHERE id = ?", received, ev.device_id
            )
        alert_id = await self._event_effect(tx, post, ev, device if registered else None, test, now)
        for hook in self.event_hooks:
            await hook(tx, post, ev, device if registered else None, alert_id)
        if alert_id is not None:
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
            cleared = await self.open_alert(tx, f"device:{ev.device_id}:no_heartbeat")
            if cleared is not None:
                await self.system_resolve(
                    tx, post, cleared, Outcome.CLEARED_BY_DEVICE, "heartbeat resumed", now
                )
            return None
        if ev.type is EventType.CMD_RESULT:
            return await self._command_result(tx, post, ev, actor, source, now)
        if ev.type in (EventType.CALL_CONNECTED, EventType.CANCEL):
            target = await self.open_alert(tx, help_key(ev.device_id, resident_id))
            if target is None:
                return None
            action = "call_connected" if ev.type is EventType.CALL_CONNECTED else "resident_cancelled"
            await self.log_action(
                tx, post, target, action, actor, source, {"event_id": ev.event_id, **ev.data}, now
            )
            return int(target["id"])
        cleared_type = CLEARS.get(ev.type)
        if cleared_type is not None:
            target = await self.open_alert(tx, f"device:{ev.device_id}:{cleared_type.value}")
            if target is None:
                return None
            await self.system_resolve(
                tx, post, target, Outcome.CLEARED_BY_DEVICE, ev.type.value, now, actor=actor, source=source
            )
            return int(target["id"])
        priority = priority_of(ev.type)
        if priority is None:
            return None
        return await self._raise_or_join(tx, post, ev, device, resident_id, priority, test, now)

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
        key = (
            help_key(ev.device_id, resident_id)
            if is_help(ev.type)
            else f"device:{ev.device_id}:{ev.type.value}"
        )
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
            open_alert = await self.open_alert(tx, key)
            assert open_alert is not None, "the conflicting open alert is visible to this transaction"
            await tx.execute(
                "UPDATE alerts SET repeat_count = repeat_count + 1, updated_at = ? WHERE id = ?",
                now,
                open_alert["id"],
            )
            await self.log_action(tx, post, open_alert, "repeat", actor, source, detail, now)
            return int(open_alert["id"])
        await self.log_action(
            tx,
            post,
            row,
            "raised",
            f"device:{ev.device_id}",
            source,
            {**detail, "unregistered": unregistered, "test": test},
            now,
        )
        for hook in self.raise_hooks:
            await hook(tx, post, row, ev)
        if is_help(ev.type) and not test:
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
                f"AND kind IN ({', '.join('?' * len(UNIT_KINDS))}) "
                "ORDER BY created_at LIMIT 1",
                resident_id,
                *UNIT_KINDS,
            )
        if target is not None:
            await self.add_command(
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
            await self.add_command(
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
            await self.log_action(
                tx,
                post,
                alert,
                "no_unit_to_call",
                "system",
                Source.SYSTEM,
                {"reason": "no registered unit for this resident; call the resident back"},
                now,
            )

    async def add_command(
        self,
        tx: Tx,
        post: PostCommit,
        channel: str,
        device_id: str,
        cmd: str,
        args: dict[str, Any],
        alert_id: int | None,
        now: float,
    ) -> str:
        cmd_id = "c" + secrets.token_hex(8)
        await tx.execute(
            "INSERT INTO outbox (kind, channel, target, alert_id, cmd_id, payload, created_at, "
            "next_attempt_at) VALUES ('device_command', ?, ?, ?, ?, ?, ?, ?)",
            channel,
            device_id,
            alert_id,
            cmd_id,
            _j({"cmd": cmd, "args": args}),
            now,
            now,
        )
        post.outbox = True
        return cmd_id

    async def _command_result(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, actor: str, source: str, now: float
    ) -> int | None:
        cmd_id = ev.data.get("cmd_id")
        if not isinstance(cmd_id, str):
            return None
        item = await tx.fetchone("SELECT * FROM outbox WHERE cmd_id = ? AND target = ?", cmd_id, ev.device_id)
        if item is None:
            return None
        await tx.execute(
            "UPDATE outbox SET done_at = ?, result = ? WHERE id = ? AND done_at IS NULL",
            now,
            _j(ev.data),
            item["id"],
        )
        if item["alert_id"] is None:
            return None
        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", item["alert_id"])
        if alert is None:
            return None
        command = json.loads(item["payload"]).get("cmd")
        await self.log_action(
            tx,
            post,
            alert,
            "cmd_result",
            actor,
            source,
            {"cmd": command, **{k: v for k, v in ev.data.items()}},
            now,
        )
        return int(alert["id"])

    async def open_alert(self, tx: Tx, key: str) -> Row | None:
        return await tx.fetchone("SELECT * FROM alerts WHERE open_key = ?", key)

    async def log_action(  # an audit record: who, when, from where
        self,
        tx: Tx,
        post: PostCommit,
        alert: Row,
        action: str,
        actor: str,
        source: str,
        detail: dict[str, Any],
        now: float,
        *,
        state: str | None = None,
    ) -> None:
        await tx.execute(
            "INSERT INTO alert_log (alert_id, at, action, actor, source, detail) VALUES (?, ?, ?, ?, ?, ?)",
            alert["id"],
            now,
            action,
            actor,
            str(source),
            _j(detail),
        )
        post.changes.append(
            AlertChange(str(alert["id"]), action, int(alert["priority"]), state or alert["state"])
        )

    async def system_resolve(
        self,
        tx: Tx,
        post: PostCommit,
        alert: Row,
        outcome: Outcome,
        reason: str,
        now: float,
        *,
        actor: str = "system",
        source: str = Source.SYSTEM,
    ) -> None:
        next_state(AlertState(alert["state"]), LifecycleAction.SYSTEM_RESOLVE)
        await tx.execute(
            "UPDATE alerts SET state = 'resolved', open_key = NULL, resolved_at = ?, resolved_by = ?, "
            "outcome = ?, updated_at = ? WHERE id = ?",
            now,
            actor,
            outcome.value,
            now,
            alert["id"],
        )
        await self.log_action(
            tx,
            post,
            alert,
            "resolved",
            actor,
            source,
            {"outcome": outcome.value, "reason": reason},
            now,
            state="resolved",
        )
        await self.stop_side_effects(tx, post, alert, now)

    async def stop_side_effects(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        """A resolved alert sends nothing more: in the resolving transaction, cancel its pending
        device commands (``call_centre`` retries, ``announce``...), its escalation steps and its
        supervisor notifications, and say on its timeline what was cancelled.

        Every path that resolves an alert (operator, system, device clearing, commissioning) goes
        through :meth:`resolve` or :meth:`system_resolve`, which call this. Responder call-outs are
        not touched: they start *after* a ``responder_sent`` resolution.
        """
        reason = "alert resolved"
        commands = await tx.fetchall(
            "SELECT id, cmd_id, target, payload FROM outbox WHERE alert_id = ? AND done_at IS NULL "
            "ORDER BY id",
            alert["id"],
        )
        if commands:
            await tx.execute(
                "UPDATE outbox SET done_at = ?, last_error = ? WHERE alert_id = ? AND done_at IS NULL",
                now,
                f"cancelled: {reason}",
                alert["id"],
            )
            await self.log_action(
                tx,
                post,
                alert,
                "commands_cancelled",
                "system",
                Source.SYSTEM,
                {
                    "commands": [
                        {
                            "cmd": json.loads(c["payload"]).get("cmd"),
                            "cmd_id": c["cmd_id"],
                            "target": c["target"],
                        }
                        for c in commands
                    ],
                    "reason": "the alert was resolved",
                },
                now,
                state="resolved",
            )
        steps = await tx.execute(
            "UPDATE escalation_steps SET state = 'cancelled', done_at = ?, result = ? "
            "WHERE alert_id = ? AND kind = 'policy' AND state = 'pending'",
            now,
            reason,
            alert["id"],
        )
        notifications = await tx.execute(
            "UPDATE notifications SET state = 'cancelled', updated_at = ?, last_error = ?, "
            "lease_until = NULL WHERE alert_id = ? AND purpose = 'supervisor' AND state = 'pending'",
            now,
            reason,
            alert["id"],
        )
        if steps or notifications:
            await self.log_action(
                tx,
                post,
                alert,
                "escalation_stopped",
                "system",
                Source.SYSTEM,
                {
                    "cancelled": steps + notifications,
                    "escalation_steps": steps,
                    "notifications": notifications,
                    "reason": "the alert was resolved",
                },
                now,
                state="resolved",
            )

    # -- operators -------------------------------------------------------------------------------
    async def acknowledge(self, alert_id: str, *, actor: str, source: str) -> Alert:
        """Claim an alert. Idempotent for the holder; Conflict if someone else holds it."""

        async def work(tx: Tx, post: PostCommit) -> Alert:
            row = await self._alert_row(tx, alert_id)
            state = AlertState(row["state"])
            if state is AlertState.ACKNOWLEDGED:
                if row["acknowledged_by"] == actor:
                    return alert_from_row(row)
                raise Conflict(
                    f"alert {alert_id} is held by {row['acknowledged_by']}", holder=row["acknowledged_by"]
                )
            next_state(state, LifecycleAction.ACKNOWLEDGE)
            now = _now()
            changed = await tx.execute(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?, "
                "updated_at = ? WHERE id = ? AND state = 'raised'",
                now,
                actor,
                now,
                row["id"],
            )
            if changed != 1:  # another node got there between our read and write
                raise Conflict(f"alert {alert_id} changed while acknowledging; reload it")
            await self.log_action(tx, post, row, "acknowledged", actor, source, {}, now, state="acknowledged")
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self.transaction(work)
        return result

    async def resolve(
        self, alert_id: str, *, outcome: str, note: str | None, actor: str, source: str
    ) -> Alert:
        """Close an acknowledged alert with an outcome code; only its holder may resolve it."""
        try:
            code = Outcome(outcome)
        except ValueError:
            raise InvalidRequest(
                f"unknown outcome {outcome[:40]!r}; expected one of {', '.join(o.value for o in Outcome)}"
            ) from None
        if code is Outcome.CLEARED_BY_DEVICE:
            raise InvalidRequest("outcome 'cleared_by_device' is recorded by the system, not by operators")

        async def work(tx: Tx, post: PostCommit) -> Alert:
            row = await self._alert_row(tx, alert_id)
            state = AlertState(row["state"])
            next_state(state, LifecycleAction.RESOLVE)
            if row["acknowledged_by"] != actor:
                raise Conflict(
                    f"alert {alert_id} is held by {row['acknowledged_by']}", holder=row["acknowledged_by"]
                )
            now = _now()
            changed = await tx.execute(
                "UPDATE alerts SET state = 'resolved', open_key = NULL, resolved_at = ?, resolved_by = ?, "
                "outcome = ?, note = ?, updated_at = ? WHERE id = ? AND state = 'acknowledged'",
                now,
                actor,
                code.value,
                note,
                now,
                row["id"],
            )
            if changed != 1:
                raise Conflict(f"alert {alert_id} changed while resolving; reload it")
            await self.log_action(
                tx,
                post,
                row,
                "resolved",
                actor,
                source,
                {"outcome": code.value, **({"note": note} if note else {})},
                now,
                state="resolved",
            )
            await self.stop_side_effects(tx, post, row, now)
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self.transaction(work)
        return result

    async def reassign(self, alert_id: str, *, to: str, actor: str, source: str) -> Alert:
        """A supervisor hands an acknowledged alert to another operator (or claims a raised one for them)."""

        async def work(tx: Tx, post: PostCommit) -> Alert:
            row = await self._alert_row(tx, alert_id)
            state = AlertState(row["state"])
            if state is AlertState.RAISED:
                next_state(state, LifecycleAction.ACKNOWLEDGE)
            elif state is not AlertState.ACKNOWLEDGED:
                raise IllegalTransition(state, LifecycleAction.ACKNOWLEDGE)
            target = await tx.fetchone("SELECT name, role FROM users WHERE name = ? AND disabled = 0", to)
            if target is None or not User(target["name"], Role(target["role"])).can("alerts:handle"):
                raise InvalidRequest(f"{to[:64]!r} is not a user who can handle alerts")
            now = _now()
            changed = await tx.execute(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_by = ?, "
                "acknowledged_at = COALESCE(acknowledged_at, ?), updated_at = ? WHERE id = ? AND state = ?",
                to,
                now,
                now,
                row["id"],
                state.value,
            )
            if changed != 1:
                raise Conflict(f"alert {alert_id} changed while reassigning; reload it")
            await self.log_action(
                tx,
                post,
                row,
                "reassigned",
                actor,
                source,
                {"from": row["acknowledged_by"], "to": to},
                now,
                state="acknowledged",
            )
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self.transaction(work)
        return result

    async def add_note(self, alert_id: str, *, note: str, actor: str, source: str) -> None:
        """Add a free-text note to an alert's timeline."""

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._alert_row(tx, alert_id)
            await self.log_action(tx, post, row, "note", actor, source, {"note": note}, _now())

        await self.transaction(work)

    async def _alert_row(self, tx: Tx, alert_id: str) -> Row:
        key = row_id(alert_id)
        if key is None:
            raise NotFound(f"no alert {alert_id[:40]!r}")
        row = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", key)
        if row is None:
            raise NotFound(f"no alert {alert_id[:40]!r}")
        return row

    # -- reading ---------------------------------------------------------------------------------
    async def get_alert(self, alert_id: str) -> tuple[Alert, list[TimelineEntry]]:
        """One alert and its timeline, oldest entry first."""
        async with self.read() as tx:
            row = await self._alert_row(tx, alert_id)
            log_rows = await tx.fetchall(
                "SELECT at, action, actor, source, detail FROM alert_log WHERE alert_id = ? ORDER BY id",
                row["id"],
            )
        timeline = [
            TimelineEntry(r["at"], r["action"], r["actor"], r["source"], json.loads(r["detail"]))
            for r in log_rows
        ]
        return alert_from_row(row), timeline

    async def get_alerts(self, alert_ids: Sequence[str]) -> list[Alert]:
        """Several alerts by id, in the order asked for (unknown ids are left out)."""
        keys = [k for k in map(row_id, alert_ids) if k is not None]
        if not keys:
            return []
        marks = ", ".join("?" for _ in keys)
        async with self.read() as tx:
            rows = await tx.fetchall(f"SELECT * FROM alerts WHERE id IN ({marks})", *keys)
        by_id = {int(r["id"]): r for r in rows}
        return [alert_from_row(by_id[k]) for k in keys if k in by_id]

    async def list_alerts(
        self, *, state: str = "open", limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Alert], str | None]:
        """Alerts in queue order (priority, then age), a page at a time."""
        states = STATE_FILTERS.get(state)
        if states is None:
            raise InvalidRequest(f"state must be one of {', '.join(STATE_FILTERS)}")
        marks = ", ".join("?" for _ in states)
        sql = f"SELECT * FROM alerts WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if cursor:
            priority, raised_at, last_id = decode_cursor(cursor)
            sql += " AND (priority, raised_at, id) > (?, ?, ?)"
            args += [priority, raised_at, last_id]
        sql += " ORDER BY priority, raised_at, id LIMIT ?"
        args.append(limit + 1)
        async with self.read() as tx:
            rows = await tx.fetchall(sql, *args)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = encode_cursor(int(last["priority"]), float(last["raised_at"]), int(last["id"]))
        return [alert_from_row(r) for r in rows], next_cursor

    async def open_alert_counts(self) -> dict[tuple[int, str], int]:
        """Open alerts counted by (priority, state), for metrics."""
        async with self.read() as tx:
            rows = await tx.fetchall(
                "SELECT priority, state, COUNT(*) AS n FROM alerts WHERE state IN ('raised', 'acknowledged') "
                "GROUP BY priority, state"
            )
        return {(int(r["priority"]), r["state"]): int(r["n"]) for r in rows}

    async def event_count(self) -> int:
        async with self.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM events")
        return int(row["n"]) if row else 0

    # -- outbox ----------------------------------------------------------------------------------
    async def claim_outbox(
        self, *, limit: int = 100, lease_s: float = 15.0, now: float | None = None
    ) -> list[OutboxItem]:
        """Take due outbox items, pushing their next attempt out by a lease so no one else takes them.

        An item whose alert is already resolved is closed here instead of handed out (resolving
        cancels them too; this catches any left behind).
        """

        async def work(tx: Tx, post: PostCommit) -> list[OutboxItem]:
            at = _now() if now is None else now
            rows = await tx.fetchall(
                "SELECT * FROM outbox WHERE done_at IS NULL AND next_attempt_at <= ? ORDER BY id LIMIT ?"
                + self.skip_locked(),
                at,
                limit,
            )
            resolved = await self._resolved_among(tx, [r["alert_id"] for r in rows])
            items = []
            for r in rows:
                if r["alert_id"] is not None and int(r["alert_id"]) in resolved:
                    await tx.execute(
                        "UPDATE outbox SET done_at = ?, last_error = ? WHERE id = ?",
                        at,
                        "cancelled: alert resolved",
                        r["id"],
                    )
                    continue
                attempts = int(r["attempts"]) + 1
                if attempts > COMMAND_MAX_ATTEMPTS:
                    await tx.execute(
                        "UPDATE outbox SET done_at = ?, last_error = ? WHERE id = ?",
                        at,
                        "gave up: no cmd_result after retries",
                        r["id"],
                    )
                    if r["alert_id"] is not None:
                        alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", r["alert_id"])
                        if alert is not None:
                            await self.log_action(
                                tx,
                                post,
                                alert,
                                "command_failed",
                                "system",
                                Source.SYSTEM,
                                {
                                    "cmd_id": r["cmd_id"],
                                    "target": r["target"],
                                    "reason": "the unit never confirmed the command",
                                },
                                at,
                            )
                    continue
                delay = COMMAND_RETRY_S[min(attempts - 1, len(COMMAND_RETRY_S) - 1)]
                await tx.execute(
                    "UPDATE outbox SET attempts = ?, next_attempt_at = ? WHERE id = ?",
                    attempts,
                    at + max(delay, lease_s),
                    r["id"],
                )
                items.append(
                    OutboxItem(
                        id=int(r["id"]),
                        kind=r["kind"],
                        channel=r["channel"],
                        target=r["target"],
                        alert_id=None if r["alert_id"] is None else str(r["alert_id"]),
                        cmd_id=r["cmd_id"],
                        payload=json.loads(r["payload"]),
                        attempts=attempts,
                    )
                )
            return items

        result: list[OutboxItem] = await self.transaction(work)
        return result

    async def _resolved_among(self, tx: Tx, alert_ids: Sequence[Any]) -> set[int]:
        keys = sorted({int(a) for a in alert_ids if a is not None})
        if not keys:
            return set()
        marks = ", ".join("?" for _ in keys)
        rows = await tx.fetchall(f"SELECT id FROM alerts WHERE state = 'resolved' AND id IN ({marks})", *keys)
        return {int(r["id"]) for r in rows}

    async def outbox_void_reason(self, item: OutboxItem) -> str | None:
        """Why a claimed item must not be sent now (closed meanwhile, its alert resolved), or None.

        The sender asks just before sending, so a command claimed before a resolve never goes out
        after it.
        """
        async with self.read() as tx:
            row = await tx.fetchone("SELECT done_at, last_error FROM outbox WHERE id = ?", item.id)
            if row is None:
                return "the item is gone"
            if row["done_at"] is not None:
                return str(row["last_error"] or "the item is already done")
            if item.alert_id is not None and await self._resolved_among(tx, [item.alert_id]):
                return "cancelled: alert resolved"
        return None

    def skip_locked(self) -> str:
        """The clause that lets other nodes skip rows this claim locks (PostgreSQL); empty here."""
        return ""

    async def outbox_sent(self, item: OutboxItem, *, error: str | None = None) -> None:
        """Record one attempt at an outbox item on its alert's timeline."""
        if item.alert_id is None:
            if error:
                log.warning("outbox item %s failed: %s", item.id, error)
            return

        async def work(tx: Tx, post: PostCommit) -> None:
            alert = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", int(item.alert_id or 0))
            if error is not None:
                await tx.execute("UPDATE outbox SET last_error = ? WHERE id = ?", error, item.id)
            if alert is None:
                return
            detail = {
                "cmd": item.payload.get("cmd"),
                "cmd_id": item.cmd_id,
                "target": item.target,
                "attempt": item.attempts,
            }
            if error:
                detail["error"] = error
            await self.log_action(
                tx,
                post,
                alert,
                "command_failed" if error else "command_sent",
                "system",
                Source.SYSTEM,
                detail,
                _now(),
            )

        await self.transaction(work)

    async def pending_outbox(self) -> int:
        async with self.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE done_at IS NULL")
        return int(row["n"]) if row else 0

    # -- users -----------------------------------------------------------------------------------
    async def add_user(self, name: str, role: Role, *, replace: bool = True) -> str:
        """Create a user (or give an existing one a new role and token); returns the new API token.

        With ``replace=False`` an existing user is left alone and :class:`Conflict` raised.
        """
        token = secrets.token_urlsafe(32)

        async def work(tx: Tx, post: PostCommit) -> None:
            existing = await tx.fetchone("SELECT name FROM users WHERE name = ?", name)
            if existing is not None and not replace:
                raise Conflict(f"user {name!r} already exists")
            if existing is None:
                await tx.execute(
                    "INSERT INTO users (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                    name,
                    role.value,
                    hash_token(token),
                    _now(),
                )
            else:
                await tx.execute(
                    "UPDATE users SET role = ?, token_hash = ? WHERE name = ?",
                    role.value,
                    hash_token(token),
                    name,
                )
                await self.record_access_change(tx, post, name)  # new role and token: streams re-check

        await self.transaction(work)
        return token

    async def user_for_token(self, token: str) -> User | None:
        async with self.read() as tx:
            row = await tx.fetchone(
                "SELECT name, role FROM users WHERE token_hash = ? AND disabled = 0", hash_token(token)
            )
        return None if row is None else User(row["name"], Role(row["role"]))

    # -- devices (the registry grows in the installers' issue) ------------------------------------
    async def upsert_device(
        self,
        device_id: str,
        kind: str,
        *,
        resident_id: str | None = None,
        channel: str = "mqtt",
        phone: str | None = None,
        alexa_device_id: str | None = None,
    ) -> None:
        """Register (or re-register) a device, validated by the registry's :class:`Device` model:
        what the registry cannot read back is never stored (InvalidRequest naming the field)."""
        d = _valid(
            Device,
            {
                "id": device_id,
                "kind": kind,
                "resident_id": resident_id,
                "channel": channel,
                "phone": phone,
                "alexa_device_id": alexa_device_id,
            },
        )

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO devices (id, kind, resident_id, channel, phone, alexa_device_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
                "resident_id = excluded.resident_id, channel = excluded.channel, phone = excluded.phone, "
                "alexa_device_id = excluded.alexa_device_id",
                d.id,
                d.kind.value,
                d.resident_id,
                d.channel,
                d.phone,
                d.alexa_device_id,
                _now(),
            )

        await self.transaction(work)

    async def upsert_resident(self, resident_id: str, name: str, data: dict[str, Any] | None = None) -> None:
        """Register (or replace) a resident, validated by the registry's :class:`Resident` model -- the
        same rules the registry reads with, so what is stored always reads back (a language name such
        as ``Welsh`` is stored as its tag ``cy``; a bad value is an InvalidRequest naming the field)."""
        r = _valid(Resident, {**(data or {}), "id": resident_id, "name": name})

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO residents (id, name, data, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, data = excluded.data",
                r.id,
                r.name,
                _j(r.data()),
                _now(),
            )

        await self.transaction(work)

    async def set_device_online(self, device_id: str, online: bool) -> None:
        """The unit's will message (or its 'online' status) arrived."""
        await self.set_devices_online([(device_id, online)])

    async def set_devices_online(self, statuses: Sequence[tuple[str, bool]]) -> None:
        """Several units' statuses, read together, in one transaction (a power cut reconnects thousands)."""

        async def work(tx: Tx, post: PostCommit) -> None:
            for device_id, online in statuses:
                await tx.execute("UPDATE devices SET online = ? WHERE id = ?", int(online), device_id)

        await self.transaction(work)

    # -- health ----------------------------------------------------------------------------------
    async def probe_write(self) -> None:
        """Write and commit one row: raises when the store does not accept writes."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await tx.execute(
                "INSERT INTO health_probe (id, at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                _now(),
            )

        await self.transaction(work)


_Record = TypeVar("_Record", Device, Resident)


def _valid(model: type[_Record], fields: dict[str, Any]) -> _Record:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        what = f"{model.__name__.lower()} {str(fields.get('id'))[:64]!r}"
        raise InvalidRequest(
            f"{what}: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors_of(exc))
        ) from None


def _source_of(ev: DeviceEvent) -> str:
    return {"voice": Source.VOICE, "sms": Source.SMS, "system": Source.SYSTEM}.get(ev.source, Source.DEVICE)
