"""Alarm floods: many units reporting the same technical alarm at once become one incident.

After a power cut thousands of units report ``mains_fail`` within seconds. Each still gets its own
stored, acknowledged alert (promise 1), but once ``threshold`` alerts of one type were raised within
``window_s`` they are grouped into an *incident*: one line in the operator's queue with a live count
and the list of units, so a ``fall`` raised in the middle of the flood is still the top line.

- Help types (priority 1) are never grouped: the rules refuse them, and the hook checks again.
- Grouping runs in the ingest transaction (a raise hook, ``HookOrder.FLOODS``); the alert row gets
  ``incident_id`` and its ``data.incident_id`` shows it in the API.
- ``mains_restored`` resolves the unit's ``mains_fail`` (the core does that); the event hook then
  closes the incident once none of its alerts is open. An incident whose alerts were all closed some
  other way is closed when the next alert of its type would have joined it.
- Counts are computed when read, never kept on the incident row: several nodes grouping at once
  would otherwise all queue on that one row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from alarm_centre.host import HookOrder
from alarm_centre.ids import row_id
from alarm_centre.lifecycle import Source
from alarm_centre.model import iso
from alarm_centre.store.base import AlertStore, PostCommit, Row, Tx, alert_from_row
from devices import strict_json
from devices.events import DeviceEvent
from devices.vocabulary import CLEARS, EventType, Priority, is_help, priority_of

#: Technical types grouped by default.
DEFAULT_TYPES = tuple(t.value for t in EventType if priority_of(t) is Priority.TECHNICAL)
#: Units listed on an incident line in the queue (the incident itself lists them all).
LINE_UNITS = 20


def check_types(types: Iterable[str]) -> list[str]:
    """Event types that may be grouped: known alert types, never a help type. Raises ValueError."""
    checked = []
    for name in types:
        try:
            event_type = EventType(name)
        except ValueError:
            raise ValueError(f"unknown event type {name!r}") from None
        if is_help(event_type):
            raise ValueError(f"{name!r} is a help type; help alerts are never grouped")
        if priority_of(event_type) is None:
            raise ValueError(f"{name!r} raises no alert, so there is nothing to group")
        checked.append(event_type.value)
    return checked


@dataclass(frozen=True, slots=True)
class FloodRules:
    """``threshold`` alerts of one type within ``window_s`` seconds make an incident."""

    threshold: int = 20
    window_s: float = 60.0
    types: frozenset[str] = frozenset(DEFAULT_TYPES)

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("threshold must be at least 2")
        check_types(self.types)


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    type: str
    priority: int
    state: str
    opened_at: float
    closed_at: float | None
    closed_reason: str | None
    count: int
    open_count: int
    last_raised_at: float | None
    units: list[str] = field(default_factory=list)

    def to_json(self, *, units_limit: int | None = None) -> dict[str, Any]:
        units = self.units if units_limit is None else self.units[:units_limit]
        return {
            "kind": "incident", "id": self.id, "type": self.type, "priority": self.priority,
            "state": self.state, "opened_at": iso(self.opened_at), "closed_at": iso(self.closed_at),
            "closed_reason": self.closed_reason, "count": self.count, "open_count": self.open_count,
            "last_raised_at": iso(self.last_raised_at), "units": units,
            "units_truncated": len(units) < len(self.units),
        }


_COUNTS = ("SELECT COUNT(*) AS n, SUM(CASE WHEN state <> 'resolved' THEN 1 ELSE 0 END) AS open_n, "
           "MAX(raised_at) AS last_at FROM alerts WHERE incident_id = ?")


class FloodGrouper:
    """Groups alarm floods into incidents; install its hooks on the store with :meth:`install`."""

    def __init__(self, store: AlertStore, rules: FloodRules | None = None) -> None:
        self.store = store
        self.rules = rules or FloodRules()

    def install(self) -> None:
        self.store.add_raise_hook(self.on_raise, HookOrder.FLOODS)
        self.store.add_event_hook(self.on_event, HookOrder.FLOODS)

    # -- hooks (in the ingest transaction) -------------------------------------------------------
    async def on_raise(self, tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
        """A new alert: join the open incident of its type, or open one when the flood threshold is met."""
        kind = str(alert["type"])
        if int(alert["priority"]) <= Priority.EMERGENCY or is_help(event.type):
            return  # never group help away
        if kind not in self.rules.types or alert["test"]:
            return
        key = f"flood:{kind}"
        raised_at = float(alert["raised_at"])
        incident = await tx.fetchone("SELECT id FROM incidents WHERE open_key = ?", key)
        if incident is not None and await self._all_closed(tx, int(incident["id"])):
            await self._close(tx, int(incident["id"]), raised_at, "all alerts closed")
            incident = None
        if incident is not None:
            await self._attach(tx, alert, int(incident["id"]))
            return
        since = raised_at - self.rules.window_s
        row = await tx.fetchone(
            "SELECT COUNT(*) AS n FROM alerts WHERE type = ? AND raised_at >= ? AND incident_id IS NULL "
            "AND state <> 'resolved' AND test = 0", kind, since)
        if row is None or int(row["n"]) < self.rules.threshold:
            return
        created = await tx.fetchone(
            "INSERT INTO incidents (type, priority, state, open_key, opened_at) VALUES (?, ?, 'open', ?, ?) "
            "ON CONFLICT (open_key) DO NOTHING RETURNING id", kind, int(alert["priority"]), key, raised_at)
        if created is None:  # another node opened it a moment ago
            incident = await tx.fetchone("SELECT id FROM incidents WHERE open_key = ?", key)
            if incident is not None:
                await self._attach(tx, alert, int(incident["id"]))
            return
        incident_id = int(created["id"])
        grouped = await tx.fetchall(
            "SELECT * FROM alerts WHERE type = ? AND raised_at >= ? AND incident_id IS NULL "
            "AND state <> 'resolved' AND test = 0 ORDER BY id", kind, since)
        for member in grouped:
            await self._attach(tx, member, incident_id)
            if member["id"] != alert["id"]:  # its raise is already on its way to the console
                await self.store.log_action(tx, post, member, "grouped", "system", Source.SYSTEM,
                                            {"incident_id": str(incident_id)}, raised_at)

    async def on_event(self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None,
                       alert_id: int | None) -> None:
        """``mains_restored`` (or any clearing event) resolved an alert: close its incident when empty."""
        if alert_id is None or ev.type not in CLEARS:
            return
        row = await tx.fetchone("SELECT incident_id FROM alerts WHERE id = ?", alert_id)
        if row is None or row["incident_id"] is None:
            return
        incident_id = int(row["incident_id"])
        if await self._all_closed(tx, incident_id):
            await self._close(tx, incident_id, ev.received_at.timestamp(),
                              f"all units reported {ev.type.value}")

    async def _attach(self, tx: Tx, alert: Row, incident_id: int) -> None:
        data = json.loads(alert["data"] or "{}")
        data["incident_id"] = str(incident_id)
        await tx.execute("UPDATE alerts SET incident_id = ?, data = ? WHERE id = ?", incident_id,
                         strict_json.column_text(data), alert["id"])

    async def _all_closed(self, tx: Tx, incident_id: int) -> bool:
        still_open = await tx.fetchone(
            "SELECT id FROM alerts WHERE incident_id = ? AND state <> 'resolved' LIMIT 1", incident_id)
        return still_open is None

    async def _close(self, tx: Tx, incident_id: int, now: float, reason: str) -> None:
        await tx.execute("UPDATE incidents SET state = 'closed', open_key = NULL, closed_at = ?, "
                         "closed_reason = ? WHERE id = ? AND state = 'open'", now, reason, incident_id)

    # -- reading ---------------------------------------------------------------------------------
    async def _incident(self, tx: Tx, row: Row, units_limit: int | None) -> Incident:
        counts = await tx.fetchone(_COUNTS, row["id"])
        sql = "SELECT device_id FROM alerts WHERE incident_id = ? ORDER BY id"
        args: list[Any] = [row["id"]]
        if units_limit is not None:
            sql += " LIMIT ?"
            args.append(units_limit + 1)
        units = [r["device_id"] for r in await tx.fetchall(sql, *args)]
        return Incident(
            id=str(row["id"]), type=row["type"], priority=int(row["priority"]), state=row["state"],
            opened_at=float(row["opened_at"]), closed_at=row["closed_at"], closed_reason=row["closed_reason"],
            count=int(counts["n"] or 0) if counts else 0,
            open_count=int(counts["open_n"] or 0) if counts else 0,
            last_raised_at=counts["last_at"] if counts else None, units=units,
        )

    async def list_incidents(self, *, state: str = "open", limit: int = 100,
                             units_limit: int = LINE_UNITS) -> list[Incident]:
        """Incidents, newest first (``state``: open, closed or all)."""
        if state not in ("open", "closed", "all"):
            raise ValueError("state must be open, closed or all")
        where = "" if state == "all" else " WHERE state = ?"
        args: list[Any] = [] if state == "all" else [state]
        async with self.store.read() as tx:
            rows = await tx.fetchall(
                f"SELECT * FROM incidents{where} ORDER BY opened_at DESC, id DESC LIMIT ?", *args, limit)
            return [await self._incident(tx, r, units_limit) for r in rows]

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident with every unit in it."""
        key = row_id(incident_id)
        if key is None:
            return None
        async with self.store.read() as tx:
            row = await tx.fetchone("SELECT * FROM incidents WHERE id = ?", key)
            return None if row is None else await self._incident(tx, row, None)

    async def queue(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The operator's queue: open alerts not in an open incident, plus one line per open incident,
        in priority then age order."""
        async with self.store.read() as tx:
            rows = await tx.fetchall(
                "SELECT a.* FROM alerts a LEFT JOIN incidents i ON i.id = a.incident_id AND i.state = 'open' "
                "WHERE a.state IN ('raised', 'acknowledged') AND i.id IS NULL "
                "ORDER BY a.priority, a.raised_at, a.id LIMIT ?", limit)
            incidents = [await self._incident(tx, r, LINE_UNITS) for r in await tx.fetchall(
                "SELECT * FROM incidents WHERE state = 'open' ORDER BY opened_at, id LIMIT ?", limit)]
        lines: list[tuple[tuple[int, float, int], dict[str, Any]]] = []
        for r in rows:
            lines.append(((int(r["priority"]), float(r["raised_at"]), 0),
                          {"kind": "alert", **alert_from_row(r).to_json()}))
        for inc in incidents:
            if inc.open_count:
                lines.append(((inc.priority, inc.opened_at, 1), inc.to_json(units_limit=LINE_UNITS)))
        lines.sort(key=lambda line: line[0])
        return [line for _, line in lines[:limit]]
