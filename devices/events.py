"""Device events as frozen values, and the identifier rules every wire format shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.vocabulary import EventType

#: A device id: 1-64 characters of A-Za-z0-9._-, but not ``.`` or ``..`` (path segments that mean
#: "here" and "up" in a topic filter, a file name or a URL path). Every path checks ids with this rule.
#: The characters and length of the rule alone, for schemas whose regex dialect has no lookahead (pydantic,
#: JSON Schema); such a schema is paired with :func:`device_id_ok` for the ``.``/``..`` part.
DEVICE_ID_CHARS = r"[A-Za-z0-9._-]{1,64}"
DEVICE_ID_RE = re.compile(rf"(?!\.{{1,2}}\Z){DEVICE_ID_CHARS}")
DEVICE_ID_RULE = "1-64 characters of A-Za-z0-9._-, and not . or .."
MAX_EVENT_ID = 64
#: A device clock more than this many seconds off ours, either way, flags its alert ``clock_skew``
#: (the event's own time is kept beside ours; alerts are always timed by the bridge's clock).
CLOCK_SKEW_LIMIT_S = 300.0


class InvalidIdentifier(ValueError):
    """An identifier breaks the wire contract's rules."""


def check_device_id(device_id: str) -> str:
    """Return the id if it keeps :data:`DEVICE_ID_RULE`; raise InvalidIdentifier otherwise."""
    if not device_id_ok(device_id):
        raise InvalidIdentifier(f"device_id must be {DEVICE_ID_RULE}")
    return device_id


def device_id_ok(value: object) -> bool:
    """Whether ``value`` is a string keeping :data:`DEVICE_ID_RULE` (devices and residents alike)."""
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None


def check_event_id(event_id: object) -> str:
    """Return the id if it is a string of 1-64 printable characters; raise InvalidIdentifier otherwise."""
    if not isinstance(event_id, str):
        raise InvalidIdentifier("event_id must be a string")
    if not 1 <= len(event_id) <= MAX_EVENT_ID:
        raise InvalidIdentifier(f"event_id must be 1-{MAX_EVENT_ID} characters")
    if not event_id.isprintable():
        raise InvalidIdentifier("event_id must be printable characters")
    return event_id


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One event from one device, as decoded from any transport.

    ``ts`` is the device's own clock; ``received_at`` is ours. ``source`` names the path it came in by
    (``mqtt``, ``serial``, ``sms``, ``voice``, ``system``) and lands in the audit trail.
    """

    device_id: str
    event_id: str
    type: EventType
    received_at: datetime
    ts: datetime | None = None
    test: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    source: str = "mqtt"
    #: Set by voice and SMS paths: the device is not a unit we can command over MQTT.
    unregistered_hint: dict[str, Any] | None = None

    @property
    def clock_skew_s(self) -> float | None:
        """Seconds the device clock is ahead (+) or behind (-) ours, when the event carried a time."""
        if self.ts is None:
            return None
        return (self.ts - self.received_at).total_seconds()

    @property
    def clock_skewed(self) -> bool:
        """Whether the device clock is more than :data:`CLOCK_SKEW_LIMIT_S` off ours."""
        skew = self.clock_skew_s
        return skew is not None and abs(skew) > CLOCK_SKEW_LIMIT_S
