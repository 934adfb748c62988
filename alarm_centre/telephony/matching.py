"""Who is calling: the caller's number against units' SIM numbers and residents' own phones, and the alert
the call belongs to.

The alert is the caller's open help alert (the one the bridge just sent ``call_centre`` for). When there
is none, the call raises one through the intake like any other call for help (``voice_help`` with source
``phone``: durable, audited, escalated), from the matched unit, or from a stand-in device named after the
number, so a caller nobody knows still reaches an operator, on an alert flagged unregistered that
carries the caller id: unknown never means dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from alarm_centre.alerts.intake import Intake
from alarm_centre.store.alerts import alert_row
from alarm_centre.store.base import AlertStore
from alarm_centre.telephony import store as sql
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS
from devices.vocabulary import EventType, help_key

#: What a caller's number becomes in a stand-in device id (the device-id rule allows no ``+``).
_NOT_ID = re.compile(r"[^A-Za-z0-9]")
CALLER_DEVICE_PREFIX = "caller-"


class Matched(StrEnum):
    """How a caller was recognised."""

    UNIT_SIM = "unit_sim"
    RESIDENT_PHONE = "resident_phone"
    UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class CallerMatch:
    how: Matched
    device_id: str | None = None
    resident_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallAlert:
    """The alert a call belongs to, and when its signal arrived (for signal-to-speech times)."""

    alert_id: int
    signal_at: float
    raised_by_call: bool


def caller_device_id(number: str) -> str:
    """The stand-in device id of a caller no unit or resident owns: ``caller-447700900123``."""
    digits = _NOT_ID.sub("", number)[:50]
    return CALLER_DEVICE_PREFIX + (digits or "withheld")


async def match_caller(store: AlertStore, number: str) -> CallerMatch:
    """A unit's SIM first (the unit calling after its alarm), then a resident's own phone."""
    if not number:
        return CallerMatch(Matched.UNMATCHED)
    async with store.read() as tx:
        unit = await sql.unit_with_sim(tx, number)
        if unit is not None:
            return CallerMatch(Matched.UNIT_SIM, str(unit["id"]), unit["resident_id"])
        residents = await sql.residents_with_phone(tx, number)
        if residents:
            resident_id = str(residents[0]["id"])
            unit = await sql.first_unit_of(tx, resident_id, (*UNIT_KINDS, "alexa"))
            return CallerMatch(Matched.RESIDENT_PHONE, str(unit["id"]) if unit else None, resident_id)
    return CallerMatch(Matched.UNMATCHED)


async def alert_for_call(
    store: AlertStore,
    intake: Intake,
    match: CallerMatch,
    *,
    call_sid: str,
    caller: str,
    called: str,
    received_at: float,
) -> CallAlert:
    """The caller's open help alert, or a new one raised for this call (see the module docstring)."""
    device_id = match.device_id or caller_device_id(caller)
    async with store.read() as tx:
        row = await sql.open_alert_by_key(tx, help_key(device_id, match.resident_id))
    if row is not None:
        return CallAlert(int(row["id"]), float(row["raised_at"]), raised_by_call=False)
    data: dict[str, str] = {"caller_id": caller or "withheld", "called": called, "call_sid": call_sid}
    hint = None
    if match.device_id is None:
        hint = {"caller_id": caller or "withheld", "via": "a phone call to the centre"}
        if match.resident_id is not None:
            data["resident_id"] = match.resident_id  # a resident's phone, but no unit on record
    event = DeviceEvent(
        device_id,
        f"call-{call_sid}",
        EventType.VOICE_HELP,
        datetime.fromtimestamp(received_at, UTC),
        data=data,
        source="phone",
        unregistered_hint=hint,
    )
    result = await intake.submit(event)
    if result.alert_id is None:
        raise RuntimeError(f"the call {call_sid} raised no alert ({result.result}: {result.error})")
    async with store.read() as tx:
        raised = await alert_row(tx, int(result.alert_id))
    signal_at = float(raised["raised_at"]) if raised is not None else received_at
    return CallAlert(int(result.alert_id), signal_at, raised_by_call=result.result == "accepted")
