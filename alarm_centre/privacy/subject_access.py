"""Subject access: everything the centre holds about one resident, as one JSON document and a summary a
person can read (Markdown), for ``telecare-bridge privacy export`` and
``GET /api/v1/privacy/residents/{id}/export``.

The document holds the resident's card (every field), their devices and Echo links, their check-in
schedule, their alerts with each timeline, notification and call-out, the device events of those alerts
and of their devices (heartbeats counted, not listed), the SMS among them, their voice check-ins, the
registry's history of their record and devices, and every recorded read of their data. Secrets of the
units (DC-09 keys, SIP passwords) are never in it: they are not the resident's data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from alarm_centre.alerts.model import iso
from alarm_centre.escalation.states import marks
from alarm_centre.privacy.need_to_know import PURPOSES, ResidentField
from alarm_centre.privacy.reads import read_json
from alarm_centre.privacy.retention import RetentionKind, RetentionPolicy
from alarm_centre.store.alerts import alert_from_row
from alarm_centre.store.tx import Database, NotFound, Row, Tx
from devices.registry import Device, DeviceKind, Resident

FORMAT = "telecare-bridge subject access export v1"
HEARTBEAT = "heartbeat"


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"unreadable": text}


def _when(value: Any) -> str | None:
    return None if value is None else iso(float(value))


def _device(row: Row) -> dict[str, Any]:
    try:
        body: dict[str, Any] = Device.from_row(row).model_dump(mode="json")
    except ValueError:  # a record older than today's rules: show its columns as stored
        body = {k: row[k] for k in ("id", "kind", "resident_id", "channel", "phone") if k in row}
    data = _json(row["data"])
    if isinstance(data, dict) and data.get("alexa_user_id"):
        body["alexa_user_id"] = data["alexa_user_id"]
    body.update(
        status=row["status"],
        registered_at=_when(row["created_at"]),
        last_seen_at=_when(row["last_seen_at"]),
        retired_at=_when(row.get("retired_at")),
    )
    return body


def _event(row: Row) -> dict[str, Any]:
    return {
        "device_id": row["device_id"],
        "event_id": row["event_id"],
        "type": row["type"],
        "received_at": _when(row["received_at"]),
        "device_time": _when(row["ts"]),
        "source": row["source"],
        "test": bool(row["test"]),
        "alert_id": None if row["alert_id"] is None else str(row["alert_id"]),
        "data": _json(row["data"]),
    }


async def _alerts(tx: Tx, resident_id: str) -> list[dict[str, Any]]:
    rows = await tx.fetchall("SELECT * FROM alerts WHERE resident_id = ? ORDER BY raised_at, id", resident_id)
    out = []
    for row in rows:
        alert = alert_from_row(row).to_json()
        key = int(row["id"])
        timeline = await tx.fetchall("SELECT * FROM alert_log WHERE alert_id = ? ORDER BY id", key)
        alert["timeline"] = [
            {
                "at": _when(t["at"]),
                "action": t["action"],
                "actor": t["actor"],
                "source": t["source"],
                "detail": _json(t["detail"]),
            }
            for t in timeline
        ]
        notes = await tx.fetchall("SELECT * FROM notifications WHERE alert_id = ? ORDER BY id", key)
        alert["notifications"] = [
            {
                "purpose": n["purpose"],
                "name": n["name"],
                "channel": n["channel"],
                "to": n["to_number"],
                "body": n["body"],
                "state": n["state"],
                "status": n["status"],
                "created_at": _when(n["created_at"]),
            }
            for n in notes
        ]
        callout = await tx.fetchone("SELECT * FROM escalation_callouts WHERE alert_id = ?", key)
        alert["callout"] = (
            None
            if callout is None
            else {
                "responders": _json(callout["responders"]),
                "state": callout["state"],
                "accepted_by": callout["accepted_by"],
                "started_at": _when(callout["started_at"]),
            }
        )
        out.append(alert)
    return out


async def _events(
    tx: Tx, device_ids: Sequence[str], alert_ids: Sequence[int]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Events of the resident's alerts and devices, heartbeats only counted per device."""
    found: dict[tuple[str, str], Row] = {}
    heartbeats: dict[str, int] = {}
    if alert_ids:
        for row in await tx.fetchall(
            f"SELECT * FROM events WHERE alert_id IN ({marks(tuple(alert_ids))})", *alert_ids
        ):
            found[(row["device_id"], row["event_id"])] = row
    if device_ids:
        devices = tuple(device_ids)
        for row in await tx.fetchall(
            f"SELECT * FROM events WHERE device_id IN ({marks(devices)}) AND type <> ?", *devices, HEARTBEAT
        ):
            found[(row["device_id"], row["event_id"])] = row
        for row in await tx.fetchall(
            f"SELECT device_id, COUNT(*) AS n FROM events WHERE device_id IN ({marks(devices)}) "
            "AND type = ? GROUP BY device_id",
            *devices,
            HEARTBEAT,
        ):
            heartbeats[str(row["device_id"])] = int(row["n"])
    events = sorted(found.values(), key=lambda r: (float(r["received_at"]), r["event_id"]))
    return [_event(r) for r in events], heartbeats


async def subject_access(
    store: Database,
    resident_id: str,
    *,
    requested_by: str,
    kinds: Sequence[RetentionKind] = (),
    policy: RetentionPolicy | None = None,
) -> dict[str, Any]:
    """Everything held about ``resident_id`` as one JSON-ready document; NotFound if there is no such
    resident. ``kinds`` and ``policy`` add how long each kind of record is kept."""
    async with store.read() as tx:
        row = await tx.fetchone("SELECT * FROM residents WHERE id = ?", resident_id)
        if row is None:
            raise NotFound(f"no resident {resident_id!r}")
        card = Resident.from_row(row).model_dump(mode="json")
        stored = _json(row["data"])
        other = {k: v for k, v in stored.items() if k not in card} if isinstance(stored, dict) else {}
        device_rows = await tx.fetchall(
            "SELECT * FROM devices WHERE resident_id = ? ORDER BY created_at, id", resident_id
        )
        devices = [_device(d) for d in device_rows]
        schedule = await tx.fetchone("SELECT * FROM checkin_schedules WHERE resident_id = ?", resident_id)
        alerts = await _alerts(tx, resident_id)
        events, heartbeats = await _events(
            tx, [str(d["id"]) for d in device_rows], [int(a["id"]) for a in alerts]
        )
        check_ins = await tx.fetchall(
            "SELECT * FROM voice_checkins WHERE resident_id = ? ORDER BY at, id", resident_id
        )
        subjects = [f"resident:{resident_id}", *(f"device:{d['id']}" for d in device_rows)]
        history = await tx.fetchall(
            f"SELECT * FROM registry_log WHERE subject IN ({marks(tuple(subjects))}) ORDER BY id", *subjects
        )
        reads = await tx.fetchall(
            "SELECT * FROM personal_data_reads WHERE resident_id = ? ORDER BY id", resident_id
        )
    return {
        "format": FORMAT,
        "generated_at": iso(time.time()),
        "requested_by": requested_by,
        "resident": {**card, "other_details": other, "registered_at": _when(row["created_at"])},
        "why_each_field_is_held": {f.value: PURPOSES[f] for f in ResidentField},
        "retention_days": None if policy is None else {k["kind"]: k["days"] for k in policy.describe(kinds)},
        "devices": [d for d in devices if d.get("kind") != DeviceKind.ALEXA.value],
        "echo_links": [d for d in devices if d.get("kind") == DeviceKind.ALEXA.value],
        "check_in_schedule": None
        if schedule is None
        else {
            "deadline": schedule["deadline"],
            "timezone": schedule["timezone"],
            "last_missed_at": _when(schedule["last_missed_at"]),
        },
        "alerts": alerts,
        "events": events,
        "heartbeats_counted": heartbeats,
        "sms": [e for e in events if e["source"] == "sms"],
        "voice_check_ins": [
            {"at": _when(c["at"]), "device_id": c["device_id"], "alexa_device_id": c["alexa_device_id"]}
            for c in check_ins
        ],
        "registry_history": [
            {
                "at": _when(h["at"]),
                "actor": h["actor"],
                "source": h["source"],
                "action": h["action"],
                "subject": h["subject"],
                "detail": _json(h["detail"]),
            }
            for h in history
        ],
        "reads_of_their_data": [read_json(r) for r in reads],
    }


def _cell(value: Any) -> str:
    text = "" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def summary_markdown(doc: dict[str, Any]) -> str:
    """The export as a summary a person can read: the card in full, then each section as a table."""
    r = doc["resident"]
    lines = [
        f"# Subject access export: {r['name']} ({r['id']})",
        "",
        f"Generated {doc['generated_at']} for {doc['requested_by']}. The JSON file beside this one holds "
        "everything listed here in full.",
        "",
        "## What we hold on the resident's record",
        "",
    ]
    lines += _table(
        ["field", "value", "why we hold it"],
        [
            [field, r.get(field), doc["why_each_field_is_held"].get(field, "")]
            for field in ("name", "address", "key_safe", "medical_notes", "language", "dc09_account")
        ]
        + [["responders", "; ".join(f"{p['name']} {p['phone']}" for p in r["responders"]), ""]]
        + [[k, v, doc["why_each_field_is_held"]["other_details"]] for k, v in r["other_details"].items()],
    )
    lines += ["## Devices", ""]
    lines += _table(
        ["id", "kind", "phone", "status", "registered"],
        [[d["id"], d.get("kind"), d.get("phone"), d["status"], d["registered_at"]] for d in doc["devices"]],
    )
    lines += ["## Echo links", ""]
    lines += _table(
        ["id", "Echo id", "status"],
        [[d["id"], d.get("alexa_device_id"), d["status"]] for d in doc["echo_links"]],
    )
    lines += ["## Alerts", ""]
    lines += _table(
        ["id", "type", "raised", "state", "outcome", "note", "timeline entries", "notifications"],
        [
            [
                a["id"],
                a["type"],
                a["raised_at"],
                a["state"],
                a["outcome"],
                a["note"],
                len(a["timeline"]),
                len(a["notifications"]),
            ]
            for a in doc["alerts"]
        ],
    )
    lines += ["## SMS received", ""]
    lines += _table(
        ["received", "device", "text"],
        [[e["received_at"], e["device_id"], e["data"].get("text")] for e in doc["sms"]],
    )
    lines += [
        "## Device events",
        "",
        f"{len(doc['events'])} events listed in the JSON file; heartbeats counted: "
        + (", ".join(f"{k} {v}" for k, v in doc["heartbeats_counted"].items()) or "none"),
        "",
        "## Voice check-ins",
        "",
    ]
    lines += _table(["at", "device"], [[c["at"], c["device_id"]] for c in doc["voice_check_ins"]])
    lines += ["## Who has read this data", ""]
    lines += _table(
        ["at", "who", "role", "from", "fields", "why"],
        [
            [
                x["at"],
                x["actor"],
                x["role"],
                f"{x['source']} {x['address']}",
                ", ".join(x["fields"]),
                x["purpose"],
            ]
            for x in doc["reads_of_their_data"]
        ],
    )
    if doc["retention_days"]:
        lines += ["## How long each kind of record is kept (days)", ""]
        lines += _table(
            ["kind", "days"],
            [[k, "for ever" if v is None else v] for k, v in doc["retention_days"].items()],
        )
    return "\n".join(lines)
