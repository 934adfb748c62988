"""Every SQL statement of the floods feature: incidents and the alerts grouped into them.

A repository over the store's portable ``Tx``: each function runs inside the read or the ingest
transaction its caller opened; :class:`alarm_centre.floods.grouping.FloodGrouper` decides.
"""

from __future__ import annotations

from typing import Any

from alarm_centre.floods.model import IncidentState
from alarm_centre.store.tx import Row, Tx

_OPEN, _CLOSED = IncidentState.OPEN.value, IncidentState.CLOSED.value
#: Counts are computed when read, never kept on the incident row (see grouping.py).
_COUNTS = (
    "SELECT COUNT(*) AS n, SUM(CASE WHEN state <> 'resolved' THEN 1 ELSE 0 END) AS open_n, "
    "MAX(raised_at) AS last_at FROM alerts WHERE incident_id = ?"
)
#: Alerts of one type that may still join a flood: ungrouped, open, not tests, recent.
_GROUPABLE = (
    "FROM alerts WHERE type = ? AND raised_at >= ? AND incident_id IS NULL "
    "AND state <> 'resolved' AND test = 0"
)


# -- writing (in the ingest transaction) -----------------------------------------------------------
async def open_incident(tx: Tx, key: str) -> Row | None:
    """The open incident with this key (``flood:<type>``)."""
    return await tx.fetchone("SELECT id FROM incidents WHERE open_key = ?", key)


async def groupable_count(tx: Tx, kind: str, since: float) -> int:
    row = await tx.fetchone(f"SELECT COUNT(*) AS n {_GROUPABLE}", kind, since)
    return 0 if row is None else int(row["n"])


async def groupable_alerts(tx: Tx, kind: str, since: float) -> list[Row]:
    return await tx.fetchall(f"SELECT * {_GROUPABLE} ORDER BY id", kind, since)


async def create_incident(tx: Tx, kind: str, priority: int, key: str, opened_at: float) -> int | None:
    """Open an incident; None when another node opened the same one a moment ago."""
    row = await tx.fetchone(
        "INSERT INTO incidents (type, priority, state, open_key, opened_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (open_key) DO NOTHING RETURNING id",
        kind,
        priority,
        _OPEN,
        key,
        opened_at,
    )
    return None if row is None else int(row["id"])


async def attach(tx: Tx, alert_id: Any, incident_id: int, data: str) -> None:
    await tx.execute("UPDATE alerts SET incident_id = ?, data = ? WHERE id = ?", incident_id, data, alert_id)


async def incident_of(tx: Tx, alert_id: int) -> int | None:
    row = await tx.fetchone("SELECT incident_id FROM alerts WHERE id = ?", alert_id)
    return None if row is None or row["incident_id"] is None else int(row["incident_id"])


async def all_closed(tx: Tx, incident_id: int) -> bool:
    still_open = await tx.fetchone(
        "SELECT id FROM alerts WHERE incident_id = ? AND state <> 'resolved' LIMIT 1", incident_id
    )
    return still_open is None


async def close(tx: Tx, incident_id: int, now: float, reason: str) -> None:
    await tx.execute(
        "UPDATE incidents SET state = ?, open_key = NULL, closed_at = ?, "
        "closed_reason = ? WHERE id = ? AND state = ?",
        _CLOSED,
        now,
        reason,
        incident_id,
        _OPEN,
    )


# -- reading ---------------------------------------------------------------------------------------
async def counts(tx: Tx, incident_id: Any) -> Row | None:
    return await tx.fetchone(_COUNTS, incident_id)


async def units(tx: Tx, incident_id: Any, limit: int | None) -> list[str]:
    sql = "SELECT device_id FROM alerts WHERE incident_id = ? ORDER BY id"
    args: list[Any] = [incident_id]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [r["device_id"] for r in await tx.fetchall(sql, *args)]


async def incidents(tx: Tx, state: IncidentState | None, limit: int) -> list[Row]:
    """Incidents newest first, of one state (None: all)."""
    if state is None:
        return await tx.fetchall("SELECT * FROM incidents ORDER BY opened_at DESC, id DESC LIMIT ?", limit)
    return await tx.fetchall(
        "SELECT * FROM incidents WHERE state = ? ORDER BY opened_at DESC, id DESC LIMIT ?", state.value, limit
    )


async def incident(tx: Tx, incident_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM incidents WHERE id = ?", incident_id)


async def ungrouped_open_alerts(tx: Tx, limit: int) -> list[Row]:
    """Open alerts that are not in an open incident, in priority then age order."""
    return await tx.fetchall(
        "SELECT a.* FROM alerts a LEFT JOIN incidents i ON i.id = a.incident_id AND i.state = ? "
        "WHERE a.state IN ('raised', 'acknowledged') AND i.id IS NULL "
        "ORDER BY a.priority, a.raised_at, a.id LIMIT ?",
        _OPEN,
        limit,
    )


async def open_incidents(tx: Tx, limit: int) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM incidents WHERE state = ? ORDER BY opened_at, id LIMIT ?", _OPEN, limit
    )
