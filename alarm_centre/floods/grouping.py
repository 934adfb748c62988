"""Alarm floods: many units reporting the same technical alarm at once become one incident.

After a power cut thousands of units report ``mains_fail`` within seconds. Each still gets its own
stored, acknowledged alert (promise 1), but once ``threshold`` alerts of one type were raised within
``window_s`` they are grouped into an *incident*: one line in the operator's queue with a live count
and the list of units, so a ``fall`` raised in the middle of the flood is still the top line.

- Help types (priority 1) are never grouped: the rules refuse them, and the hook checks again.
- Grouping runs in the ingest transaction (a raise hook, ``HookOrder.FLOODS``); the alert row gets
  ``incident_id`` and its ``data.incident_id`` shows it in the API.
- ``mains_restored`` (or any ``restored`` of a technical type) resolves the unit's alert (the core
  does that); the event hook then closes the incident once none of its alerts is open. An incident
  whose alerts were all closed some other way is closed when the next alert of its type would have
  joined it.
- Counts are computed when read, never kept on the incident row: several nodes grouping at once
  would otherwise all queue on that one row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import Source
from alarm_centre.floods import store as sql
from alarm_centre.floods.model import (
    LINE_UNITS,
    FloodRules,
    Incident,
    IncidentFilter,
    IncidentState,
)
from alarm_centre.host import HookOrder
from alarm_centre.ids import row_id
from alarm_centre.store.alerts import alert_from_row
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import LogEntry, PostCommit, Raised, Row, Tx
from devices import strict_json
from devices.events import DeviceEvent
from devices.vocabulary import CLEARS, Priority, is_help, restore_target


class FloodGrouper:
    """Groups alarm floods into incidents; install its hooks on the store with :meth:`install`.

    Its SQL is in ``store.py``.
    """

    def __init__(self, store: AlertStore, rules: FloodRules | None = None) -> None:
        self.store = store
        self.rules = rules or FloodRules()

    def install(self) -> None:
        self.store.add_raise_hook(self.on_raise, HookOrder.FLOODS, self.on_raises)
        self.store.add_event_hook(self.on_event, HookOrder.FLOODS)

    def _groupable(self, alert: Row, event: DeviceEvent) -> bool:
        """Whether a new alert may be grouped: a technical type the rules name, never help, not a test."""
        if int(alert["priority"]) <= Priority.EMERGENCY or is_help(event.type):
            return False  # never group help away
        return str(alert["type"]) in self.rules.types and not alert["test"]

    # -- hooks (in the ingest transaction) -------------------------------------------------------
    async def on_raise(self, tx: Tx, post: PostCommit, alert: Row, event: DeviceEvent) -> None:
        """A new alert: join the open incident of its type, or open one when the flood threshold is met."""
        if not self._groupable(alert, event):
            return
        kind = str(alert["type"])
        key = _key(kind)
        raised_at = float(alert["raised_at"])
        incident = await sql.open_incident(tx, key)
        if incident is not None and await sql.all_closed(tx, int(incident["id"])):
            await sql.close(tx, int(incident["id"]), raised_at, "all alerts closed")
            incident = None
        if incident is not None:
            await self._attach(tx, alert, int(incident["id"]))
            return
        since = raised_at - self.rules.window_s
        if await sql.groupable_count(tx, kind, since) < self.rules.threshold:
            return
        created = await sql.create_incident(tx, kind, int(alert["priority"]), key, raised_at)
        if created is None:  # another node opened it a moment ago
            incident = await sql.open_incident(tx, key)
            if incident is not None:
                await self._attach(tx, alert, int(incident["id"]))
            return
        incident_id = created
        for member in await sql.groupable_alerts(tx, kind, since):
            await self._attach(tx, member, incident_id)
            if member["id"] != alert["id"]:  # its raise is already on its way to the console
                await self.store.alerts.log_action(
                    tx,
                    post,
                    member,
                    AuditAction.GROUPED,
                    "system",
                    Source.SYSTEM,
                    {"incident_id": str(incident_id)},
                    raised_at,
                )

    async def on_raises(self, tx: Tx, post: PostCommit, raised: Sequence[Raised]) -> None:
        """:meth:`on_raise`'s batch form (PostgreSQL's set-based ingest): the same incidents opened,
        closed and joined, and the same ``grouped`` entries, as :meth:`on_raise` called on each new
        alert in turn, in at most eight statements whatever the batch's size.

        Per type: an open incident is closed first if none of its alerts is open, else every new alert
        joins it; without one, the threshold is counted as each alert would have counted it (the
        groupable alerts raised before, plus this batch's up to it), and the alert that reaches it
        opens the incident with every groupable alert, and those after it join."""
        by_kind: dict[str, list[Row]] = {}
        for item in raised:
            if self._groupable(item.alert, item.event):
                by_kind.setdefault(str(item.alert["type"]), []).append(item.alert)
        if not by_kind:
            return
        found = await sql.open_incidents_of(tx, [_key(kind) for kind in by_kind])
        empty = await sql.all_closed_among(tx, sorted(found.values()))
        await sql.close_many(
            tx,
            [
                (found[_key(kind)], float(alerts[0]["raised_at"]), "all alerts closed")
                for kind, alerts in by_kind.items()
                if found.get(_key(kind)) in empty
            ],
        )
        joining: dict[str, int] = {}  # type -> the open incident every new alert of it joins
        for kind in by_kind:
            incident_id = found.get(_key(kind))
            if incident_id is not None and incident_id not in empty:
                joining[kind] = incident_id
        counting = [kind for kind in by_kind if kind not in joining]
        oldest = min((float(a["raised_at"]) for kind in counting for a in by_kind[kind]), default=0.0)
        batch_ids = [int(a["id"]) for alerts in by_kind.values() for a in alerts]
        earlier = await sql.groupable_alerts_of(tx, counting, oldest - self.rules.window_s, batch_ids)
        opening: dict[str, tuple[int, list[Row]]] = {}  # type -> (the alert that opens it, the members)
        for kind in counting:
            before = [r for r in earlier if r["type"] == kind]
            alerts = by_kind[kind]
            for n, alert in enumerate(alerts):
                cutoff = float(alert["raised_at"]) - self.rules.window_s
                members = [r for r in (*before, *alerts[: n + 1]) if float(r["raised_at"]) >= cutoff]
                if len(members) >= self.rules.threshold:
                    opening[kind] = (n, members)
                    break
        created = await sql.create_incidents(
            tx,
            [
                (kind, int(by_kind[kind][n]["priority"]), _key(kind), float(by_kind[kind][n]["raised_at"]))
                for kind, (n, _) in opening.items()
            ],
        )
        lost = [_key(kind) for kind in opening if _key(kind) not in created]
        others = await sql.open_incidents_of(tx, lost)  # opened by another node a moment ago
        attach: list[tuple[Row, int]] = []
        grouped: list[LogEntry] = []
        for kind, alerts in by_kind.items():
            if kind in joining:
                attach.extend((alert, joining[kind]) for alert in alerts)
                continue
            if kind not in opening:
                continue
            n, members = opening[kind]
            incident_id = created.get(_key(kind))
            if incident_id is not None:
                opener = alerts[n]
                for member in members:
                    attach.append((member, incident_id))
                    if member["id"] != opener["id"]:  # its raise is already on its way to the console
                        detail = {"incident_id": str(incident_id)}
                        at = float(opener["raised_at"])
                        grouped.append(
                            LogEntry(member, AuditAction.GROUPED, "system", Source.SYSTEM, detail, at)
                        )
            else:
                incident_id = others.get(_key(kind))
                if incident_id is None:
                    continue  # opened and closed again meanwhile: the next alerts count anew
                attach.append((alerts[n], incident_id))
            attach.extend((alert, incident_id) for alert in alerts[n + 1 :])
        await sql.attach_many(
            tx, [(int(a["id"]), incident_id, _with_incident(a, incident_id)) for a, incident_id in attach]
        )
        await self.store.log_actions(tx, post, grouped)

    async def on_event(
        self, tx: Tx, post: PostCommit, ev: DeviceEvent, device: Row | None, alert_id: int | None
    ) -> None:
        """``mains_restored`` (or any restore) resolved an alert: close its incident when empty."""
        restored = restore_target(ev.type, ev.data)
        if alert_id is None or restored is None:
            return
        incident_id = await sql.incident_of(tx, alert_id)
        if incident_id is None:
            return
        if await sql.all_closed(tx, incident_id):
            what = ev.type.value if ev.type in CLEARS else f"{restored.value} restored"
            await sql.close(tx, incident_id, ev.received_at.timestamp(), f"all units reported {what}")

    async def _attach(self, tx: Tx, alert: Row, incident_id: int) -> None:
        await sql.attach(tx, alert["id"], incident_id, _with_incident(alert, incident_id))

    # -- reading ---------------------------------------------------------------------------------
    async def _incident(self, tx: Tx, row: Row, units_limit: int | None) -> Incident:
        counts = await sql.counts(tx, row["id"])
        units = await sql.units(tx, row["id"], None if units_limit is None else units_limit + 1)
        return Incident(
            id=str(row["id"]),
            type=row["type"],
            priority=int(row["priority"]),
            state=row["state"],
            opened_at=float(row["opened_at"]),
            closed_at=row["closed_at"],
            closed_reason=row["closed_reason"],
            count=int(counts["n"] or 0) if counts else 0,
            open_count=int(counts["open_n"] or 0) if counts else 0,
            last_raised_at=counts["last_at"] if counts else None,
            units=units,
        )

    async def list_incidents(
        self, *, state: str = IncidentFilter.OPEN, limit: int = 100, units_limit: int = LINE_UNITS
    ) -> list[Incident]:
        """Incidents, newest first (``state``: open, closed or all)."""
        try:
            which = IncidentFilter(state)
        except ValueError:
            raise ValueError("state must be open, closed or all") from None
        only = None if which is IncidentFilter.ALL else IncidentState(which.value)
        async with self.store.read() as tx:
            rows = await sql.incidents(tx, only, limit)
            return [await self._incident(tx, r, units_limit) for r in rows]

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident with every unit in it."""
        key = row_id(incident_id)
        if key is None:
            return None
        async with self.store.read() as tx:
            row = await sql.incident(tx, key)
            return None if row is None else await self._incident(tx, row, None)

    async def queue(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The operator's queue: open alerts not in an open incident, plus one line per open incident,
        in priority then age order."""
        async with self.store.read() as tx:
            rows = await sql.ungrouped_open_alerts(tx, limit)
            incidents = [await self._incident(tx, r, LINE_UNITS) for r in await sql.open_incidents(tx, limit)]
        lines: list[tuple[tuple[int, float, int], dict[str, Any]]] = []
        for r in rows:
            lines.append(
                (
                    (int(r["priority"]), float(r["raised_at"]), 0),
                    {"kind": "alert", **alert_from_row(r).to_json()},
                )
            )
        for inc in incidents:
            if inc.open_count:
                lines.append(((inc.priority, inc.opened_at, 1), inc.to_json(units_limit=LINE_UNITS)))
        lines.sort(key=lambda line: line[0])
        return [line for _, line in lines[:limit]]


def _key(kind: str) -> str:
    """The open incident's key for an alert type."""
    return f"flood:{kind}"


def _with_incident(alert: Row, incident_id: int) -> str:
    """The alert's ``data`` column naming its incident."""
    data = json.loads(alert["data"] or "{}")
    data["incident_id"] = str(incident_id)
    return strict_json.column_text(data)
