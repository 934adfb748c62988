"""A resident's responders, read defensively from ``residents.data["responders"]``, and the texts they get.

The installers' registry owns how responders are entered; here they are only read: a list of
``{"name": str, "phone": "+44…"}`` in the order they should be contacted. Anything else is skipped and
counted, never fatal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from devices.phone import is_e164

MAX_RESPONDERS = 10


@dataclass(frozen=True, slots=True)
class Responder:
    name: str
    phone: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone}


def read_responders(data: Any) -> tuple[list[Responder], int]:
    """Usable responders in order from a resident's ``data`` (dict or JSON text), and how many skipped."""
    if isinstance(data, str):
        try:
            data = json.loads(data or "{}")
        except ValueError:
            return [], 0
    raw = data.get("responders") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return [], 0
    found: list[Responder] = []
    skipped = 0
    for item in raw:
        if not isinstance(item, dict):
            skipped += 1
            continue
        phone = item.get("phone")
        name = item.get("name")
        if not isinstance(phone, str):
            skipped += 1
            continue
        phone = re.sub(r"[\s()-]", "", phone)
        if not is_e164(phone) or any(r.phone == phone for r in found):
            skipped += 1
            continue
        label = name.strip()[:80] if isinstance(name, str) and name.strip() else phone
        if len(found) >= MAX_RESPONDERS:
            skipped += 1
            continue
        found.append(Responder(label, phone))
    return found, skipped


def describe(alert_type: str, resident_name: str | None, address: str | None) -> str:
    """A short plain description: 'Fall alarm for Ada Jones, 3 Acacia Avenue'."""
    what = alert_type.replace("_", " ").capitalize() + " alarm"
    who = f" for {resident_name}" if resident_name else ""
    where = f", {address}" if address else ""
    return f"{what}{who}{where}"


def supervisor_description(alert_type: str, resident_name: str | None) -> str:
    """What a supervisor is told about an alert: what it is and whose (initials only), never where the
    resident lives -- a supervisor acts on the console, where the card is ('Fall alarm for A. L.').
    Responders, who go to the home, get :func:`describe` with the address."""
    what = alert_type.replace("_", " ").capitalize() + " alarm"
    initials = " ".join(f"{part[0].upper()}." for part in (resident_name or "").split() if part[:1].isalpha())
    return f"{what} for {initials}" if initials else what


def responder_sms(description: str, alert_id: str) -> str:
    return (
        f"Telecare control centre: {description}. Can you attend? Reply YES to accept or NO to decline. "
        f"(alert {alert_id})"
    )


def responder_call(description: str) -> str:
    return f"This is the telecare control centre. {description}. Can you attend now?"


def supervisor_sms(description: str, alert_id: str, waited_s: float) -> str:
    return (
        f"Telecare: alert {alert_id} ({description}) has not been acknowledged after {int(waited_s)} s. "
        "Please check the console."
    )


def supervisor_call(description: str, waited_s: float) -> str:
    return (
        f"This is the telecare bridge. An alert has not been acknowledged after {int(waited_s)} seconds: "
        f"{description}. Please go to the console."
    )
