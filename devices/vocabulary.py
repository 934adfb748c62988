"""The event vocabulary shared by every wire format (DESIGN.md, "Event vocabulary")."""

from __future__ import annotations

from enum import IntEnum, StrEnum


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
    # priority 3: technical
    LOW_BATTERY = "low_battery"
    MAINS_FAIL = "mains_fail"
    TAMPER = "tamper"
    SENSOR_FAULT = "sensor_fault"
    RADIO_JAMMING = "radio_jamming"
    # no alert
    HEARTBEAT = "heartbeat"
    MAINS_RESTORED = "mains_restored"
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
        EventType.CANCEL,
        EventType.CALL_CONNECTED,
        EventType.CMD_RESULT,
    }
)

#: Events only the bridge raises; a device sending one is refused.
BRIDGE_ONLY: frozenset[EventType] = frozenset({EventType.NO_HEARTBEAT})

#: Which open alert a technical "all clear" resolves.
CLEARS: dict[EventType, EventType] = {EventType.MAINS_RESTORED: EventType.MAINS_FAIL}


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


def parse_event_type(value: str) -> EventType | None:
    """The EventType for a wire string, or None when the vocabulary has no such type."""
    try:
        return EventType(value)
    except ValueError:
        return None
