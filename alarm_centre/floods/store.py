"""Every SQL statement of the floods feature: incidents and the alerts grouped into them.

A repository over the store's portable ``Tx``: each function runs inside the read or the ingest
transaction its caller opened; :class:`alarm_centre.floods.grouping.FloodGrouper` decides.
"""

from __future__ import annotations

from collections.abc import Sequence
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


# -- writing a batch's at once (PostgreSQL arrays: the set-based ingest) -------------------------------
async def open_incidents_of(tx: Tx, keys: Sequence[str]) -> dict[str, int]:
    """The open incidents with these keys: id by key."""
    if not keys:
        return {}
    rows = await tx.fetchall("SELECT id, open_key FROM incidents WHERE open_key = ANY(?::text[])", list(keys))
    return {r["open_key"]: int(r["id"]) for r in rows}


async def all_closed_among(tx: Tx, incident_ids: Sequence[int]) -> set[int]:
    """Those of the incidents none of whose alerts is open (:func:`all_closed` of each)."""
    if not incident_ids:
        return set()
    rows = await tx.fetchall(
        "SELECT i.id FROM unnest(?::bigint[]) AS i(id) WHERE NOT EXISTS "
        "(SELECT 1 FROM alerts a WHERE a.incident_id = i.id AND a.state <> 'resolved')",
        list(incident_ids),
    )
    return {int(r["id"]) for r in rows}


async def close_many(tx: Tx, closes: Sequence[tuple[int, float, str]]) -> None:
    """Close incidents, each ``(id, now, reason)`` as :func:`close` would."""
    if not closes:
        return
    await tx.execute(
        "UPDATE incidents AS i SET state = ?, open_key = NULL, closed_at = c.at, closed_reason = c.reason "
        "FROM unnest(?::bigint[], ?::float8[], ?::text[]) AS c(id, at, reason) "
        "WHERE i.id = c.id AND i.state = ?",
        _CLOSED,
        [c[0] for c in closes],
        [c[1] for c in closes],
        [c[2] for c in closes],
        _OPEN,
    )


async def groupable_alerts_of(
    tx: Tx, kinds: Sequence[str], since: float, leave_out: Sequence[int]
) -> list[Row]:
    """Alerts of these types that may still join a flood, raised since ``since``, except ``leave_out``."""
    if not kinds:
        return []
    return await tx.fetchall(
        "SELECT * FROM alerts WHERE type = ANY(?::text[]) AND raised_at >= ? AND incident_id IS NULL "
        "AND state <> 'resolved' AND test = 0 AND NOT (id = ANY(?::bigint[])) ORDER BY id",
        list(kinds),
        since,
        list(leave_out),
    )


async def create_incidents(tx: Tx, incidents: Sequence[tuple[str, int, str, float]]) -> dict[str, int]:
    """Open incidents, each ``(type, priority, key, opened_at)``; id by key of those opened (one another
    node opened a moment ago is left out, as :func:`create_incident` answers None)."""
    if not incidents:
        return {}
    rows = await tx.fetchall(
        "INSERT INTO incidents (type, priority, state, open_key, opened_at) "
        "SELECT c.type, c.priority, ?, c.open_key, c.opened_at "
        "FROM unnest(?::text[], ?::int[], ?::text[], ?::float8[]) WITH ORDINALITY "
        "AS c(type, priority, open_key, opened_at, n) ORDER BY c.n "
        "ON CONFLICT (open_key) DO NOTHING RETURNING id, open_key",
        _OPEN,
        [c[0] for c in incidents],
        [c[1] for c in incidents],
        [c[2] for c in incidents],
        [c[3] for c in incidents],
    )
    return {r["open_key"]: int(r["id"]) for r in rows}


async def attach_many(tx: Tx, attached: Sequence[tuple[int, int, str]]) -> None:
    """Group alerts into incidents, each ``(alert_id, incident_id, data)`` as :func:`attach` would."""
    if not attached:
        return
    await tx.execute(
        "UPDATE alerts AS a SET incident_id = g.incident_id, data = g.data "
        "FROM unnest(?::bigint[], ?::bigint[], ?::text[]) AS g(id, incident_id, data) WHERE a.id = g.id",
        [g[0] for g in attached],
        [g[1] for g in attached],
        [g[2] for g in attached],
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
