"""What an operator needs beside an alert: the resident's card and the status of their units.

The registry is still growing (the installers' work adds fields), so everything is read defensively:
known fields are taken from the row or from its ``data`` JSON under a few likely names, values are
turned into display text here, and anything unexpected is shown as an extra line rather than dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from alarm_centre.alerts.model import iso
from alarm_centre.store.base import AlertStore

Row = Mapping[str, Any]

RESIDENT_FIELDS: dict[str, tuple[str, ...]] = {
    "address": ("address", "address_lines", "addr"),
    "key_safe": ("key_safe", "keysafe", "key_safe_code", "key_safe_details", "access", "access_notes"),
    "medical_notes": ("medical_notes", "medical", "medical_info", "conditions", "health_notes"),
    "language": ("language", "lang", "preferred_language"),
    "phone": ("phone", "telephone", "phone_number"),
}
RESPONDER_KEYS = ("responders", "contacts", "responder_list")
BATTERY_KEYS = ("battery", "battery_pct", "battery_percent", "battery_level", "battery_v")
SIGNAL_KEYS = ("signal", "rssi", "csq", "signal_strength", "signal_dbm")
_SKIP = {"id", "name", "data", "created_at", "updated_at"}


def _json_obj(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def text(value: Any, limit: int = 2000) -> str | None:
    """Any JSON-ish value as one line of display text (None when empty)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        parts = [t for t in (text(v, limit) for v in value) if t]
        return ", ".join(parts)[:limit] or None
    if isinstance(value, dict):
        parts = [f"{k}: {t}" for k, v in value.items() if (t := text(v, limit))]
        return ", ".join(parts)[:limit] or None
    return str(value)[:limit]


def _first(merged: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        if name in merged and (value := text(merged[name])):
            return name, value
    return None, None


def _responders(raw: Any) -> list[dict[str, str | None]]:
    if not isinstance(raw, list):
        return [{"name": t, "phone": None, "relation": None}] if (t := text(raw)) else []
    people: list[tuple[float, int, dict[str, str | None]]] = []
    for n, item in enumerate(raw[:20]):
        if isinstance(item, dict):
            order = item.get("order", item.get("priority", n))
            rank = float(n)
            if isinstance(order, (int, float)) and not isinstance(order, bool):
                rank = float(order)
            people.append(
                (
                    rank,
                    n,
                    {
                        "name": text(item.get("name")) or text(item.get("label")) or "(no name)",
                        "phone": text(item.get("phone") or item.get("number") or item.get("tel")),
                        "relation": text(
                            item.get("relation") or item.get("relationship") or item.get("role")
                        ),
                    },
                )
            )
        elif (t := text(item)) is not None:
            people.append((float(n), n, {"name": t, "phone": None, "relation": None}))
    return [p for _, _, p in sorted(people, key=lambda x: (x[0], x[1]))]


def resident_card(row: Row) -> dict[str, Any]:
    data = _json_obj(row.get("data"))
    merged: dict[str, Any] = {**data, **{k: v for k, v in row.items() if k != "data" and v is not None}}
    card: dict[str, Any] = {"id": text(row.get("id")), "name": text(merged.get("name")) or "(no name)"}
    used = set(_SKIP)
    for field, names in RESIDENT_FIELDS.items():
        _, value = _first(merged, names)
        card[field] = value
        used.update(names)
    responder_key, _ = _first(merged, RESPONDER_KEYS)
    card["responders"] = _responders(merged.get(responder_key)) if responder_key else []
    used.update(RESPONDER_KEYS)
    card["extra"] = [[str(k), t] for k, v in merged.items() if k not in used and (t := text(v, 500))][:20]
    return card


def unit_status(row: Row, heartbeat: Row | None, now: float) -> dict[str, Any]:
    data = _json_obj(row.get("data"))
    beat = _json_obj(heartbeat["data"]) if heartbeat is not None else {}
    _, battery = _first({**data, **beat}, BATTERY_KEYS)
    _, signal = _first({**data, **beat}, SIGNAL_KEYS)
    online = row.get("online")
    test_until = row.get("test_mode_until")
    return {
        "id": text(row.get("id")),
        "kind": text(row.get("kind")),
        "status": text(row.get("status")),
        "online": None if online is None else bool(online),
        "last_seen": iso(row["last_seen_at"]) if row.get("last_seen_at") else None,
        "last_heartbeat": iso(heartbeat["received_at"]) if heartbeat is not None else None,
        "heartbeat_interval_s": row.get("heartbeat_interval_s"),
        "battery": battery,
        "signal": signal,
        "test_mode": bool(test_until and float(test_until) > now),
    }


async def alert_context(store: AlertStore, alert_id: str) -> dict[str, Any]:
    """The resident card and unit status for one alert (NotFound if there is no such alert)."""
    alert, _ = await store.get_alert(alert_id)
    now = time.time()
    async with store.read() as tx:
        resident = None
        devices: list[Row] = []
        if alert.resident_id:
            row = await tx.fetchone("SELECT * FROM residents WHERE id = ?", alert.resident_id)
            if row is not None:
                resident = resident_card(row)
            devices = list(
                await tx.fetchall(
                    "SELECT * FROM devices WHERE resident_id = ? ORDER BY created_at LIMIT 10",
                    alert.resident_id,
                )
            )
        if not any(d["id"] == alert.device_id for d in devices):
            own = await tx.fetchone("SELECT * FROM devices WHERE id = ?", alert.device_id)
            if own is not None:
                devices.insert(0, own)
        units = []
        for device in devices:
            beat = await tx.fetchone(
                "SELECT received_at, data FROM events WHERE device_id = ? AND type = 'heartbeat' "
                "ORDER BY received_at DESC LIMIT 1",
                device["id"],
            )
            units.append(unit_status(device, beat, now))
    return {
        "alert_id": alert.id,
        "device_id": alert.device_id,
        "unregistered": alert.unregistered,
        "resident": resident,
        "units": units,
    }


async def resident_names(store: AlertStore, ids: list[str]) -> dict[str, str]:
    """Names for the queue, a page of residents at a time."""
    ids = list(dict.fromkeys(ids))[:200]
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    async with store.read() as tx:
        rows = await tx.fetchall(f"SELECT id, name FROM residents WHERE id IN ({marks})", *ids)
    return {str(r["id"]): str(r["name"]) for r in rows}
