"""SCAIP device types, status codes and message types onto our event vocabulary: the one mapping table.

:func:`meaning_of` reads an :class:`devices.scaip.AlarmRequest` into a :class:`ScaipMeaning`:

- a heartbeat (``mty`` PI, whatever the codes), feeding supervision;
- a test transmission (``stc`` 0102/0103): a test press of the device, no alert;
- an event of one of our types: an alarm state (``stc`` omitted, 0009 automatic, 0010 manual, 0011
  alert, 0110 assistance) of a device type the table knows, or a status that is a type of its own
  whatever the device (0016 battery low, 0085 mains failure, 0125 tamper ...);
- a restore that clears an open alert: 0094 restoral and 0070 normal state clear the device's type,
  0015, 0086 and 0124 clear the condition they end;
- unknown for anything else (``mty`` RE too: the unit withdrew a message session), keeping the raw
  codes so the receiver can raise an alert that shows them.

Codes are compared as numbers: units send ``3``, ``03`` and ``0003`` for the same device type
(docs/scaip.md, "What we verified and where"). docs/scaip.md prints the table for installers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from devices.scaip import AlarmRequest, MessageType
from devices.vocabulary import EventType


class ScaipKind(StrEnum):
    """What a request means for the receiver."""

    EVENT = "event"  # store an event of ``event_type``
    RESTORE = "restore"  # the condition of ``clears`` has ended
    HEARTBEAT = "heartbeat"  # the unit's poll: supervision only
    TEST = "test"  # a test transmission or test press of the device (``event_type`` when known)
    UNKNOWN = "unknown"  # codes this table does not know: raise an alert of its own showing the raw codes


@dataclass(frozen=True, slots=True)
class ScaipMeaning:
    """What one request means. ``event_type`` is our type for an EVENT or a TEST, ``heartbeat`` for a
    HEARTBEAT, the vocabulary's own restore type (``mains_restored``) or None for a RESTORE, None when
    UNKNOWN; ``clears`` is the type whose open alert a RESTORE ends. The raw codes are kept for display,
    with their names from the standard's annexes (``device``, ``status``; "" when not listed)."""

    kind: ScaipKind
    event_type: EventType | None
    dty: str | None
    stc: str | None
    mty: str | None
    clears: EventType | None = None
    device: str = ""
    status: str = ""

    @property
    def known(self) -> bool:
        """Whether the table knows the codes."""
        return self.kind is not ScaipKind.UNKNOWN

    @property
    def raw(self) -> str:
        """The codes as sent, for an alert's text: ``dty 0003 stc 0010 mty ME``."""
        parts = [
            f"{name} {value}" for name, value in (("dty", self.dty), ("stc", self.stc), ("mty", self.mty))
        ]
        return " ".join(part for part in parts if not part.endswith(" None"))


#: Device types (SS 91100:2014 Annex A) with our type for an alarm from them; None: no type of ours.
DEVICE_TYPES: dict[int, tuple[str, EventType | None]] = {
    0: ("unknown", None),
    1: ("undefined", None),
    2: ("local unit and controller", EventType.PENDANT),  # the unit's own help button
    3: ("personal trigger", EventType.PENDANT),
    4: ("fixed trigger", EventType.PENDANT),  # pull cord, wall button
    5: ("fall detector", EventType.FALL),
    6: ("personal attack pendant", EventType.PANIC),
    7: ("panic alarm button", EventType.PANIC),
    8: ("duty switch, remote", None),
    9: ("duty switch, local", None),
    10: ("activity detector", EventType.INACTIVITY),  # the standard: also used inverted, for inactivity
    11: ("pill dispenser", None),
    12: ("bed monitor", EventType.BED_EXIT),
    13: ("mat sensor", None),
    14: ("door sensor", EventType.DOOR_EXIT),
    15: ("wandering sensor", EventType.DOOR_EXIT),
    16: ("enuresis detector", None),
    17: ("epilepsy detector", EventType.EPILEPSY),
    18: ("occupancy detector", None),
    19: ("heart rate monitor", None),
    20: ("environmental monitor", EventType.EXTREME_TEMPERATURE),
    21: ("gas detector", EventType.GAS),
    22: ("lighting circuit monitor", None),
    23: ("smoke detector", EventType.SMOKE),
    24: ("heating system monitor", None),
    25: ("heat detector", EventType.HEAT),
    26: ("carbon monoxide detector", EventType.CO),
    27: ("bogus caller switch", EventType.BOGUS_CALLER),
    28: ("intruder detector", None),
    29: ("boundary detector", None),
    30: ("man down detector", EventType.FALL),
    31: ("system monitor", None),
    32: ("communication link monitor", None),
    33: ("flood detector", EventType.FLOOD),
    34: ("bath sensor", EventType.FLOOD),
    35: ("latch key", None),
    36: ("perimeter", None),
    37: ("sprinkler", None),
    38: ("tamper", EventType.TAMPER),
    39: ("printer", None),
    40: ("router", None),
    41: ("power supply, DC", None),
    42: ("electric lock", None),
    43: ("access controller", None),
    44: ("chair monitor", EventType.CHAIR_EXIT),
    45: ("controller", EventType.PENDANT),
    46: ("elevator alarm unit", None),
    47: ("fire alarm system", EventType.SMOKE),
    48: ("local unit", EventType.PENDANT),
    49: ("monitoring device", None),
    50: ("radio unit", None),
    51: ("tracking device", None),
}

#: Status codes that mean "this device is in alarm": the event is the device type's.
ALARM_STATUSES: dict[int, str] = {
    9: "alarm (automatic)",
    10: "alarm (manual)",
    11: "alert",
    110: "assistance",
}
#: Status codes that are a type of their own, whatever the device.
STATUS_EVENTS: dict[int, tuple[str, EventType]] = {
    14: ("battery failure", EventType.LOW_BATTERY),
    16: ("battery low", EventType.LOW_BATTERY),
    19: ("cancel", EventType.CANCEL),  # the resident cancelled on the unit
    52: ("jammed", EventType.RADIO_JAMMING),
    67: ("malfunction", EventType.SENSOR_FAULT),
    85: ("power failure (mains)", EventType.MAINS_FAIL),
    95: ("RF interference", EventType.RADIO_JAMMING),
    100: ("temperature high", EventType.EXTREME_TEMPERATURE),
    101: ("temperature low", EventType.EXTREME_TEMPERATURE),
    105: ("trouble", EventType.SENSOR_FAULT),
    122: ("radio interference", EventType.RADIO_JAMMING),
    123: ("radio test transmission missing", EventType.SENSOR_FAULT),
    125: ("tamper alarm", EventType.TAMPER),
    126: ("temperature rate of rise", EventType.HEAT),
}
#: Status codes that end the device type's condition (its alarm, whatever its type).
RESTORE_STATUSES: dict[int, str] = {70: "normal state", 94: "restoral"}
#: Status codes that end a condition of their own: the type cleared, and the vocabulary's type for the
#: restore where it has one.
STATUS_RESTORES: dict[int, tuple[str, EventType, EventType | None]] = {
    15: ("battery high/full/recharged", EventType.LOW_BATTERY, None),
    86: ("power restored (mains)", EventType.MAINS_FAIL, EventType.MAINS_RESTORED),
    124: ("radio test transmission re-established", EventType.SENSOR_FAULT, None),
}
#: Test transmissions: a test of the device, no alert.
TEST_STATUSES: dict[int, str] = {
    102: "test transmission, primary channel",
    103: "test transmission, redundant channel",
}


def code4(text: str | None) -> int | None:
    """A device type or status code as a number (``"3"``, ``"03"`` and ``"0003"`` are all 3), or None."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    return int(text)


def status_name(code: int) -> str:
    """The standard's name of a status code the table lists, else ""."""
    for names in (ALARM_STATUSES, RESTORE_STATUSES, TEST_STATUSES):
        if code in names:
            return names[code]
    for table in (STATUS_EVENTS, STATUS_RESTORES):
        if code in table:
            return table[code][0]
    return ""


def meaning_of(request: AlarmRequest) -> ScaipMeaning:
    """What a parsed request means (the module docstring gives the order of the rules)."""
    dty, stc, mty = code4(request.dty), code4(request.stc), request.mty
    device_name, device_type = DEVICE_TYPES.get(dty, ("", None)) if dty is not None else ("", None)
    status = status_name(stc) if stc is not None else ""

    def meaning(
        kind: ScaipKind, event_type: EventType | None, clears: EventType | None = None
    ) -> ScaipMeaning:
        return ScaipMeaning(kind, event_type, request.dty, request.stc, mty, clears, device_name, status)

    if mty == MessageType.HEARTBEAT:
        return meaning(ScaipKind.HEARTBEAT, EventType.HEARTBEAT)
    if mty not in (None, MessageType.MESSAGE, MessageType.INFORMATION):  # RE, or not a message type
        return meaning(ScaipKind.UNKNOWN, None)
    if request.stc is None:  # the standard: "alarm state shall be assumed"
        status = "alarm (status omitted)"
    elif stc is None:  # not a code (a hand-made AlarmRequest; the parser refuses these)
        return meaning(ScaipKind.UNKNOWN, None)
    if stc is None or stc in ALARM_STATUSES:
        return meaning(ScaipKind.EVENT if device_type else ScaipKind.UNKNOWN, device_type)
    if stc in TEST_STATUSES:
        return meaning(ScaipKind.TEST, device_type)
    if stc in STATUS_EVENTS:
        return meaning(ScaipKind.EVENT, STATUS_EVENTS[stc][1])
    if stc in STATUS_RESTORES:
        _, cleared, own = STATUS_RESTORES[stc]
        return meaning(ScaipKind.RESTORE, own, clears=cleared)
    if stc in RESTORE_STATUSES and device_type is not None:
        return meaning(ScaipKind.RESTORE, None, clears=device_type)
    return meaning(ScaipKind.UNKNOWN, None)
