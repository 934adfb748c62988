"""Alerts in the store: the timeline (every change audited), the operators' transitions by the lifecycle
table, system resolutions that stop every pending side effect, and reading alerts in queue order."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import Action as LifecycleAction
from alarm_centre.alerts.lifecycle import AlertState, IllegalTransition, Outcome, Source, next_state
from alarm_centre.alerts.model import Alert, Role, TimelineEntry, User
from alarm_centre.ids import MAX_ROW_ID, row_id
from alarm_centre.store.outbox import Outbox
from alarm_centre.store.tx import (
    Conflict,
    Database,
    InvalidRequest,
    NotFound,
    OrderedHooks,
    PostCommit,
    ResolveHook,
    Row,
    Tx,
    log_action,
)
from alarm_centre.store.tx import dumps as _j
from alarm_centre.store.tx import now as _now

STATE_FILTERS: dict[str, tuple[str, ...]] = {
    "open": ("raised", "acknowledged"),
    "raised": ("raised",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": ("raised", "acknowledged", "resolved"),
}


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


async def alert_row(tx: Tx, alert_id: int) -> Row | None:
    """One alert's row, as stored (``None`` if there is none)."""
    return await tx.fetchone("SELECT * FROM alerts WHERE id = ?", alert_id)


class Alerts:
    """The alerts and their timeline (``store.alerts``)."""

    def __init__(self, store: Database, outbox: Outbox, resolve_hooks: OrderedHooks[ResolveHook]) -> None:
        self._store = store
        self._outbox = outbox
        #: Run in the resolving transaction, in HookOrder (added by ``AlertStore.add_resolve_hook``).
        self._resolve_hooks = resolve_hooks

    #: An audit record: who, when, from where (:func:`alarm_centre.store.tx.log_action`).
    log_action = staticmethod(log_action)

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
            AuditAction.RESOLVED,
            actor,
            source,
            {"outcome": outcome.value, "reason": reason},
            now,
            state="resolved",
        )
        await self.stop_side_effects(tx, post, alert, now)

    async def stop_side_effects(self, tx: Tx, post: PostCommit, alert: Row, now: float) -> None:
        """A resolved alert sends nothing more: in the resolving transaction, cancel its pending
        device commands (``call_centre`` retries, ``announce``...) and say on its timeline what was
        cancelled; then the features' resolve hooks stop theirs (escalation: its pending steps and
        supervisor notifications).

        Every path that resolves an alert (operator, system, device clearing, commissioning) goes
        through :meth:`resolve` or :meth:`system_resolve`, which call this. Responder call-outs are
        not touched: they start *after* a ``responder_sent`` resolution.
        """
        reason = "alert resolved"
        commands = await self._outbox.cancel_for_alert(tx, alert["id"], reason, now)
        if commands:
            await self.log_action(
                tx,
                post,
                alert,
                AuditAction.COMMANDS_CANCELLED,
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
        for hook in self._resolve_hooks.hooks:  # features' own side effects (escalation), in HookOrder
            await hook(tx, post, alert, now)

    async def open_alert(self, tx: Tx, key: str) -> Row | None:
        return await tx.fetchone("SELECT * FROM alerts WHERE open_key = ?", key)

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
            await self.log_action(
                tx, post, row, AuditAction.ACKNOWLEDGED, actor, source, {}, now, state="acknowledged"
            )
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self._store.transaction(work)
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
                AuditAction.RESOLVED,
                actor,
                source,
                {"outcome": code.value, **({"note": note} if note else {})},
                now,
                state="resolved",
            )
            await self.stop_side_effects(tx, post, row, now)
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self._store.transaction(work)
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
                AuditAction.REASSIGNED,
                actor,
                source,
                {"from": row["acknowledged_by"], "to": to},
                now,
                state="acknowledged",
            )
            return alert_from_row(await self._alert_row(tx, alert_id))

        result: Alert = await self._store.transaction(work)
        return result

    async def add_note(self, alert_id: str, *, note: str, actor: str, source: str) -> None:
        """Add a free-text note to an alert's timeline."""

        async def work(tx: Tx, post: PostCommit) -> None:
            row = await self._alert_row(tx, alert_id)
            await self.log_action(tx, post, row, AuditAction.NOTE, actor, source, {"note": note}, _now())

        await self._store.transaction(work)

    async def _alert_row(self, tx: Tx, alert_id: str) -> Row:
        key = row_id(alert_id)
        if key is None:
            raise NotFound(f"no alert {alert_id[:40]!r}")
        row = await tx.fetchone("SELECT * FROM alerts WHERE id = ?", key)
        if row is None:
            raise NotFound(f"no alert {alert_id[:40]!r}")
        return row

    async def get_alert(self, alert_id: str) -> tuple[Alert, list[TimelineEntry]]:
        """One alert and its timeline, oldest entry first."""
        async with self._store.read() as tx:
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
        async with self._store.read() as tx:
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
        async with self._store.read() as tx:
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
        async with self._store.read() as tx:
            rows = await tx.fetchall(
                "SELECT priority, state, COUNT(*) AS n FROM alerts WHERE state IN ('raised', 'acknowledged') "
                "GROUP BY priority, state"
            )
        return {(int(r["priority"]), r["state"]): int(r["n"]) for r in rows}

    async def event_count(self) -> int:
        async with self._store.read() as tx:
            row = await tx.fetchone("SELECT COUNT(*) AS n FROM events")
        return int(row["n"]) if row else 0
