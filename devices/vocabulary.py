"""The event vocabulary shared by every wire format (DESIGN.md, "Event vocabulary")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any


class Priority(IntEnum):
    """Alert priority: lower is more urgent."""

    EMERGENCY = 1
    URGENT = 2
    TECHNICAL = 3


#: Every alert priority, as the numbers written in policies, paths and configuration.
PRIORITIES: tuple[int, ...] = tuple(p.value for p in Priority)


class EventType(StrEnum):
    # priority 1: a call for help
    VOICE_HELP = "voice_help"
    PENDANT = "pendant"
    FALL = "fall"
    SMOKE = "smoke"
    HEAT = "heat"
    CO = "co"
    GAS = "gas"
    EPILEPSY = "epilepsy"
    PANIC = "panic"
    # priority 2
    INACTIVITY = "inactivity"
    BED_EXIT = "bed_exit"
    CHAIR_EXIT = "chair_exit"
    DOOR_EXIT = "door_exit"
    FLOOD = "flood"
    EXTREME_TEMPERATURE = "extreme_temperature"
    BOGUS_CALLER = "bogus_caller"
    NO_HEARTBEAT = "no_heartbeat"
    UNKNOWN_SIGNAL = "unknown_signal"
    # priority 3: technical
    LOW_BATTERY = "low_battery"
    MAINS_FAIL = "mains_fail"
    TAMPER = "tamper"
    SENSOR_FAULT = "sensor_fault"
    RADIO_JAMMING = "radio_jamming"
    # no alert
    HEARTBEAT = "heartbeat"
    MAINS_RESTORED = "mains_restored"
    RESTORED = "restored"
    CANCEL = "cancel"
    CALL_CONNECTED = "call_connected"
    CMD_RESULT = "cmd_result"


PRIORITY: dict[EventType, Priority] = {
    **{
        t: Priority.EMERGENCY
        for t in (
            EventType.VOICE_HELP,
            EventType.PENDANT,
            EventType.FALL,
            EventType.SMOKE,
            EventType.HEAT,
            EventType.CO,
            EventType.GAS,
            EventType.EPILEPSY,
            EventType.PANIC,
        )
    },
    **{
        t: Priority.URGENT
        for t in (
            EventType.INACTIVITY,
            EventType.BED_EXIT,
            EventType.CHAIR_EXIT,
            EventType.DOOR_EXIT,
            EventType.FLOOD,
            EventType.EXTREME_TEMPERATURE,
            EventType.BOGUS_CALLER,
            EventType.NO_HEARTBEAT,
            EventType.UNKNOWN_SIGNAL,
        )
    },
    **{
        t: Priority.TECHNICAL
        for t in (
            EventType.LOW_BATTERY,
            EventType.MAINS_FAIL,
            EventType.TAMPER,
            EventType.SENSOR_FAULT,
            EventType.RADIO_JAMMING,
        )
    },
}

#: Types that never raise an alert; they update a unit or an existing alert.
NO_ALERT: frozenset[EventType] = frozenset(
    {
        EventType.HEARTBEAT,
        EventType.MAINS_RESTORED,
        EventType.RESTORED,
        EventType.CANCEL,
        EventType.CALL_CONNECTED,
        EventType.CMD_RESULT,
    }
)

#: Types that raise an alert, in vocabulary order (the API's enum of alert types).
ALERT_TYPES: tuple[EventType, ...] = tuple(t for t in EventType if t in PRIORITY)

#: Types only the bridge makes: its heartbeat supervision (``no_heartbeat``) and its standard-protocol
#: receivers (DC-09, SCAIP: ``unknown_signal``, ``restored``). A unit sending one over our own wire
#: contract (MQTT, serial) is refused.
BRIDGE_ONLY: frozenset[EventType] = frozenset(
    {EventType.NO_HEARTBEAT, EventType.UNKNOWN_SIGNAL, EventType.RESTORED}
)

#: Types of their own that restore one condition: ``mains_restored`` ends ``mains_fail``. Every other
#: restore is a ``restored`` event naming its type in ``data["restores"]`` (:func:`restored_data`).
CLEARS: dict[EventType, EventType] = {EventType.MAINS_RESTORED: EventType.MAINS_FAIL}

#: ``restored`` data: the type of the condition the unit reports ended.
RESTORES = "restores"
#: ``unknown_signal`` data: the protocol the signal came by (``dc09``, ``scaip``) and its raw code as sent.
SIGNAL_PROTOCOL = "protocol"
SIGNAL_CODE = "code"
#: A raw code longer than this is keyed by its digest (an open-alert key stays short).
MAX_KEYED_CODE = 64


def restored_data(restores: EventType, **extra: Any) -> dict[str, Any]:
    """The data of a ``restored`` event: the restored type, and anything the protocol adds."""
    return {**extra, RESTORES: restores.value}


def unknown_signal_data(protocol: str, code: str, **extra: Any) -> dict[str, Any]:
    """The data of an ``unknown_signal`` event: where it came from and its raw code, shown to operators."""
    return {**extra, SIGNAL_PROTOCOL: protocol, SIGNAL_CODE: code}


def restore_target(event_type: EventType, data: Mapping[str, Any]) -> EventType | None:
    """The type whose open alert an event restores: ``mains_fail`` for ``mains_restored``, the type named
    in ``data["restores"]`` for ``restored``; None for any other event, or for a ``restored`` that names
    no type raising an alert."""
    if event_type in CLEARS:
        return CLEARS[event_type]
    if event_type is not EventType.RESTORED:
        return None
    named = data.get(RESTORES)
    restored = parse_event_type(named) if isinstance(named, str) else None
    return restored if restored is not None and restored in PRIORITY else None


def priority_of(event_type: EventType) -> Priority | None:
    """The alert priority of a type, or None for types that raise no alert."""
    return PRIORITY.get(event_type)


def is_help(event_type: EventType) -> bool:
    """True for priority-1 types: a person asking for help."""
    return PRIORITY.get(event_type) is Priority.EMERGENCY


def help_key(device_id: str, resident_id: str | None) -> str:
    """The key a help alert stays open under: per resident when the device is linked to one, else per
    device. Help from a pendant and from the resident's Echo joins one alert; every path that looks for
    or raises an open help alert uses this key."""
    return f"resident:{resident_id}:help" if resident_id else f"device:{device_id}:help"


def alert_key(device_id: str, resident_id: str | None, event_type: EventType, data: Mapping[str, Any]) -> str:
    """The key an alert of ``event_type`` stays open under; one open alert per key, so a repeat joins it.

    Help joins per resident (:func:`help_key`); an ``unknown_signal`` per unit, protocol and raw code (each
    distinct unknown code is an alert of its own, a resend of one joins it); every other type per unit.
    Every path that raises, joins, clears or restores an alert finds it by this key."""
    if is_help(event_type):
        return help_key(device_id, resident_id)
    if event_type is EventType.UNKNOWN_SIGNAL:
        protocol = str(data.get(SIGNAL_PROTOCOL, ""))[:16]
        code = str(data.get(SIGNAL_CODE, ""))
        if len(code) > MAX_KEYED_CODE:
            code = "sha256-" + hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()
        return f"device:{device_id}:{event_type.value}:{protocol}:{code}"
    return f"device:{device_id}:{event_type.value}"


def parse_event_type(value: str) -> EventType | None:
    """The EventType for a wire string, or None when the vocabulary has no such type."""
    try:
        return EventType(value)
    except ValueError:
        return None
