"""Commissioning visits: one state table, the checklist an installer presses through, and its summary.

A visit is *in progress* from the moment a unit is put into test mode until it ends one of three
ways: the installer finishes it, its test mode times out, or the device is retired. Everything that
decides whether a visit may end, and how its end is recorded (``finish_reason``), lives here; the SQL
is in ``store.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from alarm_centre.store.tx import Conflict, Row
from devices.registry import Peripheral
from devices.vocabulary import EventType


class VisitState(StrEnum):
    """Where a visit is; a closed visit's state is its stored ``finish_reason``."""

    IN_PROGRESS = "in progress"
    FINISHED = "finished"
    TIMED_OUT = "timed out"
    DEVICE_RETIRED = "device retired"


class VisitAction(StrEnum):
    FINISH = "finish"
    TIME_OUT = "time out"
    RETIRE_DEVICE = "retire device"


TRANSITIONS: dict[VisitState, dict[VisitAction, VisitState]] = {
    VisitState.IN_PROGRESS: {
        VisitAction.FINISH: VisitState.FINISHED,
        VisitAction.TIME_OUT: VisitState.TIMED_OUT,
        VisitAction.RETIRE_DEVICE: VisitState.DEVICE_RETIRED,
    },
    VisitState.FINISHED: {},
    VisitState.TIMED_OUT: {},
    VisitState.DEVICE_RETIRED: {},
}


class IllegalVisitTransition(Conflict):
    """An action a visit's state does not allow (HTTP 409)."""

    def __init__(self, state: VisitState, action: VisitAction) -> None:
        super().__init__(f"cannot {action.value} a commissioning visit that is {state.value}")
        self.state = state
        self.action = action


def next_state(state: VisitState, action: VisitAction) -> VisitState:
    """The state an action leads to, or :class:`IllegalVisitTransition`."""
    try:
        return TRANSITIONS[state][action]
    except KeyError:
        raise IllegalVisitTransition(state, action) from None


def state_of(visit: Row) -> VisitState:
    """A stored visit's state: in progress until it has a ``finished_at``, then its ``finish_reason``."""
    if visit["finished_at"] is None:
        return VisitState.IN_PROGRESS
    return VisitState(visit["finish_reason"])


def checklist_for(peripherals: Sequence[Peripheral]) -> list[dict[str, Any]]:
    """One item per peripheral to press; a unit without peripherals is tested with its own button."""
    return [
        {
            "peripheral_id": p.id,
            "type": p.type.value,
            "location": p.location,
            "event": p.event_type.value,
            "confirmed_at": None,
            "event_id": None,
            "alert_id": None,
        }
        for p in peripherals
    ] or [
        {
            "peripheral_id": None,
            "type": "unit_button",
            "location": "",
            "event": EventType.PENDANT.value,
            "confirmed_at": None,
            "event_id": None,
            "alert_id": None,
        }
    ]


def match_press(checklist: list[dict[str, Any]], event_type: str, wanted: Any) -> dict[str, Any] | None:
    """The unconfirmed item a test press confirms: the named peripheral, else the first of its event type."""
    match = next(
        (i for i in checklist if not i["confirmed_at"] and wanted and i["peripheral_id"] == wanted), None
    )
    if match is None and not wanted:
        match = next((i for i in checklist if not i["confirmed_at"] and i["event"] == event_type), None)
    return match


def summary_of(
    visit: Row, checklist: list[dict[str, Any]], test_events: int, reason: VisitState, now: float
) -> dict[str, Any]:
    """What a closed visit proved: which items were confirmed, which are missing, whether it passed."""
    summary: dict[str, Any] = {
        "reason": reason.value,
        "duration_s": round(now - visit["started_at"], 1),
        "confirmed": [i["peripheral_id"] or i["type"] for i in checklist if i["confirmed_at"]],
        "missing": [i["peripheral_id"] or i["type"] for i in checklist if not i["confirmed_at"]],
        "test_events": test_events,
    }
    summary["passed"] = not summary["missing"]
    return summary
