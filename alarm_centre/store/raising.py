"""What raising an alert writes, decided without I/O, so raising one event and raising a batch at once
(PostgreSQL's set-based ingest) write the same rows: the alert row and its ``raised`` entry
(:func:`new_alert`), and who is told to call the centre back (:func:`call_back`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from alarm_centre.alerts.lifecycle import Source
from alarm_centre.store.tx import Row
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS
from devices.vocabulary import CLEARS, EventType, Priority, alert_key, is_help, priority_of


@dataclass(frozen=True, slots=True)
class NewAlert:
    """One alert to insert (the ``alerts`` columns) and what its ``raised`` entry says."""

    event: DeviceEvent
    device_id: str
    resident_id: str | None
    type: str
    priority: int
    open_key: str
    raised_at: float
    test: int
    unregistered: int
    clock_skew: int
    data: dict[str, Any]
    #: The event's own detail (``event_id``, ``type``, ``data``): a repeat logs this, a raise adds more.
    detail: dict[str, Any]
    actor: str
    source: str

    @property
    def raised_detail(self) -> dict[str, Any]:
        return {**self.detail, "unregistered": bool(self.unregistered), "test": bool(self.test)}


def event_detail(ev: DeviceEvent) -> dict[str, Any]:
    """What a raise or a repeat of ``ev`` records on the alert's timeline."""
    detail: dict[str, Any] = {"event_id": ev.event_id, "type": ev.type.value}
    if ev.data:
        detail["data"] = ev.data
    return detail


def source_of(ev: DeviceEvent) -> str:
    """The audit source of a device event."""
    # "phone": a caller matched to a unit or resident (telephony): a call for help by voice.
    sources = {"voice": Source.VOICE, "phone": Source.VOICE, "sms": Source.SMS, "system": Source.SYSTEM}
    return sources.get(ev.source, Source.DEVICE)


def new_alert(
    ev: DeviceEvent, device: Row | None, resident_id: str | None, priority: Priority, test: bool
) -> NewAlert:
    """The alert ``ev`` raises: ``device`` is its registered unit (None: unregistered), ``test``
    whether it is a test (the unit is in test mode)."""
    skew = ev.clock_skew_s
    clock_skew = ev.clock_skewed
    data: dict[str, Any] = {"source": ev.source}
    if ev.ts is not None:
        data["device_ts"] = ev.ts.timestamp()
    if clock_skew:
        data["clock_skew_s"] = round(skew or 0.0, 1)
    if ev.test and not test:
        data["test_flag_ignored"] = "the unit is not in test mode, so this is handled as real"
    if ev.unregistered_hint:
        data["unregistered_hint"] = ev.unregistered_hint
    if ev.data:
        data["event_data"] = ev.data
    return NewAlert(
        event=ev,
        device_id=ev.device_id,
        resident_id=resident_id,
        type=ev.type.value,
        priority=int(priority),
        open_key=alert_key(ev.device_id, resident_id, ev.type, ev.data),
        raised_at=ev.received_at.timestamp(),
        test=int(test),
        unregistered=int(device is None),
        clock_skew=int(clock_skew),
        data=data,
        detail=event_detail(ev),
        actor=f"device:{ev.device_id}",
        source=str(source_of(ev)),
    )


def is_test_alarm(ev: DeviceEvent, device: Row | None) -> bool:
    """Whether ``ev`` is a test: flagged so by a registered unit (``device``) in test mode."""
    until = None if device is None else device["test_mode_until"]
    return bool(ev.test and until and until > ev.received_at.timestamp())


def wants_call_back(ev: DeviceEvent, test: bool) -> bool:
    """Whether a new alert raised by ``ev`` asks the resident's unit to call the centre: a real call for
    help, unless it is itself a phone call to the centre (source ``phone``: the caller is on the line)."""
    return is_help(ev.type) and not test and ev.source != "phone"


def raises(kind: EventType) -> bool:
    """Whether a new event of this type raises an alert (or joins the open one), rather than clearing,
    restoring, cancelling or confirming something."""
    handled_otherwise = (
        EventType.HEARTBEAT,
        EventType.CMD_RESULT,
        EventType.CALL_CONNECTED,
        EventType.CANCEL,
    )
    if kind in handled_otherwise or kind is EventType.RESTORED or kind in CLEARS:
        return False
    return priority_of(kind) is not None


class CallBackKind(Enum):
    """How the resident's unit is told to call the centre after a call for help."""

    #: Closed at once: the answer to the unit's own event carries it (SCAIP), logged ``command_sent``.
    IN_BAND = "in_band"
    #: A ``call_centre`` command in the outbox, sent after the commit.
    COMMAND = "command"
    #: No unit to call: the operator must call the resident (``no_unit_to_call`` on the timeline).
    NO_UNIT = "no_unit"


@dataclass(frozen=True, slots=True)
class CallBack:
    """The call-back decided for one call for help."""

    kind: CallBackKind
    channel: str = ""
    target: str = ""
    #: For :attr:`CallBackKind.IN_BAND`: what the item is closed with.
    result: dict[str, Any] | None = None


#: The timeline detail of :attr:`CallBackKind.NO_UNIT` (``no_unit_to_call``).
NO_UNIT_DETAIL = {"reason": "no registered unit for this resident; call the resident back"}


def needs_resident_unit(device: Row | None, resident_id: str | None) -> bool:
    """Whether :func:`call_back` needs the resident's first active unit read (the event came from
    something that is not a unit, an Echo say)."""
    return not (device is not None and device["kind"] in UNIT_KINDS) and resident_id is not None


def call_back(
    ev: DeviceEvent,
    device: Row | None,
    resident_unit: Row | None,
    in_band: dict[tuple[str, str], dict[str, Any]],
) -> CallBack:
    """Who calls the centre back after ``ev`` raised a call for help: its own unit, else the resident's
    first active unit (``resident_unit``), else an unregistered MQTT unit (it spoke to us, so it can
    hear us), else nobody."""
    target = device if device is not None and device["kind"] in UNIT_KINDS else resident_unit
    if target is not None:
        closing = in_band.get((target["channel"], "call_centre"))
        if closing is not None and (target["id"], target["channel"]) == (ev.device_id, ev.source):
            return CallBack(CallBackKind.IN_BAND, target["channel"], target["id"], closing)
        return CallBack(CallBackKind.COMMAND, target["channel"], target["id"])
    if device is None and ev.source == "mqtt":
        return CallBack(CallBackKind.COMMAND, "mqtt", ev.device_id)
    return CallBack(CallBackKind.NO_UNIT)
