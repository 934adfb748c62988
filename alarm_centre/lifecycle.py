"""The alert lifecycle: one state column and one transition table.

Everything that decides whether an alert may move from one state to another lives here.
Escalation is recorded on an alert's timeline; it is not a state.
"""

from __future__ import annotations

from enum import StrEnum


class AlertState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    SYSTEM_RESOLVE = "system_resolve"


TRANSITIONS: dict[AlertState, dict[Action, AlertState]] = {
    AlertState.RAISED: {
        Action.ACKNOWLEDGE: AlertState.ACKNOWLEDGED,
        # Only the system resolves an alert nobody has claimed (mains restored, a passed test).
        Action.SYSTEM_RESOLVE: AlertState.RESOLVED,
    },
    AlertState.ACKNOWLEDGED: {
        Action.RESOLVE: AlertState.RESOLVED,
        Action.SYSTEM_RESOLVE: AlertState.RESOLVED,
    },
    AlertState.RESOLVED: {},
}

OPEN_STATES: frozenset[AlertState] = frozenset({AlertState.RAISED, AlertState.ACKNOWLEDGED})


class IllegalTransition(Exception):
    """An action that the current state does not allow."""

    def __init__(self, state: AlertState, action: Action) -> None:
        super().__init__(f"cannot {action.value} an alert that is {state.value}")
        self.state = state
        self.action = action


def next_state(state: AlertState, action: Action) -> AlertState:
    """The state an action leads to, or IllegalTransition."""
    try:
        return TRANSITIONS[state][action]
    except KeyError:
        raise IllegalTransition(state, action) from None


class Outcome(StrEnum):
    """Why an alert was resolved."""

    FALSE_ALARM = "false_alarm"
    RESIDENT_OK = "resident_ok"
    RESPONDER_SENT = "responder_sent"
    AMBULANCE = "ambulance"
    FIRE_SERVICE = "fire_service"
    POLICE = "police"
    NO_RESPONSE_ESCALATED = "no_response_escalated"
    TECHNICAL_FIXED = "technical_fixed"
    TEST = "test"
    CLEARED_BY_DEVICE = "cleared_by_device"


class Source(StrEnum):
    """Where a change to an alert came from (the audit trail's 'from where')."""

    CONSOLE = "console"
    API = "api"
    DEVICE = "device"
    VOICE = "voice"
    SMS = "sms"
    SYSTEM = "system"
