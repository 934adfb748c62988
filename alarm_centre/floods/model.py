"""Alarm floods: the rules that make an incident, and the incident as the API shows it.

Pure: no store, no I/O. The grouping itself (in the ingest transaction) is in ``grouping.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alarm_centre.alerts.model import iso
from devices.vocabulary import EventType, Priority, is_help, priority_of

#: Technical types grouped by default.
DEFAULT_TYPES = tuple(t.value for t in EventType if priority_of(t) is Priority.TECHNICAL)
#: Units listed on an incident line in the queue (the incident itself lists them all).
LINE_UNITS = 20


class IncidentState(StrEnum):
    """An incident is open until none of its alerts is; then it is closed for good."""

    OPEN = "open"
    CLOSED = "closed"


class IncidentFilter(StrEnum):
    """Which incidents a list shows."""

    OPEN = "open"
    CLOSED = "closed"
    ALL = "all"


def check_types(types: Iterable[str]) -> list[str]:
    """Event types that may be grouped: known alert types, never a help type. Raises ValueError."""
    checked = []
    for name in types:
        try:
            event_type = EventType(name)
        except ValueError:
            raise ValueError(f"unknown event type {name!r}") from None
        if is_help(event_type):
            raise ValueError(f"{name!r} is a help type; help alerts are never grouped")
        if priority_of(event_type) is None:
            raise ValueError(f"{name!r} raises no alert, so there is nothing to group")
        checked.append(event_type.value)
    return checked


@dataclass(frozen=True, slots=True)
class FloodRules:
    """``threshold`` alerts of one type within ``window_s`` seconds make an incident."""

    threshold: int = 20
    window_s: float = 60.0
    types: frozenset[str] = frozenset(DEFAULT_TYPES)

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("threshold must be at least 2")
        check_types(self.types)


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    type: str
    priority: int
    state: str
    opened_at: float
    closed_at: float | None
    closed_reason: str | None
    count: int
    open_count: int
    last_raised_at: float | None
    units: list[str] = field(default_factory=list)

    def to_json(self, *, units_limit: int | None = None) -> dict[str, Any]:
        units = self.units if units_limit is None else self.units[:units_limit]
        return {
            "kind": "incident",
            "id": self.id,
            "type": self.type,
            "priority": self.priority,
            "state": self.state,
            "opened_at": iso(self.opened_at),
            "closed_at": iso(self.closed_at),
            "closed_reason": self.closed_reason,
            "count": self.count,
            "open_count": self.open_count,
            "last_raised_at": iso(self.last_raised_at),
            "units": units,
            "units_truncated": len(units) < len(self.units),
        }
