"""Whom an operator dials from the alert card: the resident (their own phone), the alert's unit (its SIM),
one of the resident's responders, the emergency services, or a number; each resolved, from the store, to
a label, a number and whether it is the emergency services. A party with no number on record is refused
with a reason the operator can act on."""

from __future__ import annotations

import json
from dataclasses import dataclass

from alarm_centre.store.tx import InvalidRequest, Row, Tx
from alarm_centre.telephony import store as sql
from alarm_centre.telephony.settings import TelephonySettings, dialable
from devices.phone import is_emergency_number


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an operator dials: the resident, the alert's unit, a responder (by position), the
    emergency services, or a number."""

    kind: str  # resident | unit | responder | emergency | number
    responder: int | None = None
    number: str | None = None


@dataclass(frozen=True, slots=True)
class Party:
    label: str
    address: str
    emergency: bool


async def party_for(tx: Tx, alert: Row, target: Target, settings: TelephonySettings) -> Party:
    """The label, number and emergency flag of whom an operator dials about ``alert``."""
    if target.kind == "emergency":
        number = settings.emergency_number
        return Party("emergency services", number, True)
    if target.kind == "number":
        number = target.number or ""
        if not dialable(number):
            raise InvalidRequest(
                "number must be an E.164 number like +447700900123 (or the emergency number)"
            )
        return Party(number, number, is_emergency_number(number) or number == settings.emergency_number)
    if target.kind == "unit":
        unit = await tx.fetchone("SELECT phone FROM devices WHERE id = ?", alert["device_id"])
        if unit is None or not unit["phone"]:
            raise InvalidRequest(f"unit {alert['device_id']} has no SIM number on record")
        return Party(f"unit {alert['device_id']}", str(unit["phone"]), False)
    resident = await sql.resident(tx, str(alert["resident_id"])) if alert["resident_id"] else None
    if target.kind == "resident":
        if resident is None or not resident["phone"]:
            raise InvalidRequest("the resident has no phone number on record: dial the unit or a number")
        return Party(f"resident {resident['name']}", str(resident["phone"]), False)
    if target.kind == "responder":
        data = json.loads(resident["data"] or "{}") if resident is not None else {}
        responders = data.get("responders") if isinstance(data, dict) else None
        index = target.responder if target.responder is not None else -1
        if not isinstance(responders, list) or not 0 <= index < len(responders):
            raise InvalidRequest("no such responder for this alert's resident")
        who = responders[index]
        phone = who.get("phone") if isinstance(who, dict) else None
        if not isinstance(phone, str) or not dialable(phone):
            raise InvalidRequest("that responder has no phone number on record")
        return Party(f"responder {who.get('name') or index + 1}", phone, False)
    raise InvalidRequest("to must be resident, unit, responder, emergency or number")
