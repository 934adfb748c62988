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


#: What each outcome code means, for the people who choose one (the API description and docs/operating.md).
OUTCOME_MEANINGS: dict[Outcome, str] = {
    Outcome.RESIDENT_OK: "spoke to the resident; no help needed",
    Outcome.RESPONDER_SENT: "a responder is going; the bridge calls the resident's responders in order",
    Outcome.AMBULANCE: "an ambulance was called",
    Outcome.FIRE_SERVICE: "the fire service was called",
    Outcome.POLICE: "the police were called",
    Outcome.FALSE_ALARM: "pressed by mistake; no one needs help",
    Outcome.NO_RESPONSE_ESCALATED: "no answer from the resident, and the call was escalated",
    Outcome.TECHNICAL_FIXED: "a technical alert (battery, mains, tamper) has been dealt with",
    Outcome.TEST: "a commissioning test alarm",
    Outcome.CLEARED_BY_DEVICE: "recorded by the bridge when the unit reports a technical fault gone (mains, "
    "battery, tamper or sensor restored; heartbeats resumed); never chosen by a person",
}

#: The outcome codes a person may resolve an alert with (``cleared_by_device`` is the system's own).
OPERATOR_OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome if o is not Outcome.CLEARED_BY_DEVICE)


class Source(StrEnum):
    """Where a change to an alert came from (the audit trail's 'from where')."""

    CONSOLE = "console"
    API = "api"
    DEVICE = "device"
    VOICE = "voice"
    SMS = "sms"
    SYSTEM = "system"
