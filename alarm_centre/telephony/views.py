"""Calls and operators as the API and the console see them (an operator's own number is never shown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alarm_centre.alerts.model import iso
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import Row, Tx
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.settings import TelephonySettings
from alarm_centre.telephony.states import LegRole


async def call_views(tx: Tx, calls: Sequence[Row]) -> list[dict[str, Any]]:
    """Each call with its legs and recordings."""
    ids = [int(c["id"]) for c in calls]
    legs: dict[int, list[Row]] = {}
    for leg in await sql.legs_of_calls(tx, ids):
        legs.setdefault(int(leg["call_id"]), []).append(leg)
    recordings: dict[int, list[Row]] = {}
    for rec in await sql.recordings_of_calls(tx, ids):
        recordings.setdefault(int(rec["call_id"]), []).append(rec)
    return [call_json(c, legs.get(int(c["id"]), []), recordings.get(int(c["id"]), [])) for c in calls]


def call_json(call: Row, legs: Sequence[Row], recordings: Sequence[Row]) -> dict[str, Any]:
    """A call as the API and the console see it. Operators' own phone numbers are left out."""
    return {
        "id": str(call["id"]),
        "alert_id": str(call["alert_id"]),
        "direction": call["direction"],
        "state": call["state"],
        "result": call["result"],
        "caller": call["caller"] or None,
        "matched": call["matched"] or None,
        "operator": call["operator"],
        "started_by": call["started_by"],
        "emergency": bool(call["emergency"]),
        "started_at": iso(call["started_at"]),
        "answered_at": iso(call["answered_at"]),
        "speech_at": iso(call["speech_at"]),
        "ended_at": iso(call["ended_at"]),
        "legs": [
            {
                "id": str(leg["id"]),
                "role": leg["role"],
                "party": leg["party"],
                "number": None if leg["role"] == LegRole.OPERATOR else leg["address"],
                "state": leg["state"],
                "emergency": bool(leg["emergency"]),
                "transfer_from": leg["transfer_from"],
                "offered_at": iso(leg["offered_at"]),
                "answered_at": iso(leg["answered_at"]),
                "ended_at": iso(leg["ended_at"]),
                "result": leg["result"],
            }
            for leg in legs
        ],
        "recordings": [
            {
                "id": str(rec["id"]),
                "duration_s": int(rec["duration_s"]),
                "channels": int(rec["channels"]),
                "created_at": iso(rec["created_at"]),
                "deleted": rec["deleted_at"] is not None,
                "delete_due_at": iso(rec["delete_due_at"]),
            }
            for rec in recordings
        ],
    }


async def presence_of(store: AlertStore, settings: TelephonySettings, user: str) -> dict[str, Any]:
    """How ``user`` takes calls, whether they take them now, and whether they are on one."""
    async with store.read() as tx:
        rows = {str(r["name"]): r for r in await sql.presence(tx)}
        engaged = await sql.engaged_operators(tx)
    row = rows.get(user)
    line = settings.line(user)
    return {
        "operator": user,
        "takes_calls": line is not None,
        "via": line.via if line is not None else None,
        "available": bool(row["available"]) if row is not None else False,
        "idle_since": iso(float(row["idle_since"])) if row is not None else None,
        "on_call": user in engaged,
    }


async def presence_list(store: AlertStore, settings: TelephonySettings) -> list[dict[str, Any]]:
    """Every operator who takes calls, by name (for transfers and supervisors)."""
    async with store.read() as tx:
        rows = {str(r["name"]): r for r in await sql.presence(tx)}
        engaged = await sql.engaged_operators(tx)
    out = []
    for name, line in sorted(settings.operators.items()):
        row = rows.get(name)
        out.append(
            {
                "operator": name,
                "via": line.via,
                "available": bool(row["available"]) if row is not None else False,
                "idle_since": iso(float(row["idle_since"])) if row is not None else None,
                "on_call": name in engaged,
            }
        )
    return out
