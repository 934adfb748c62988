"""Telephony's closed sets of values and its two state machines, each one table.

A **call** (``calls.state``) is the whole conversation about an alert; a **leg** (``call_legs.state``) is
one party's line into it. The SQL never writes a state as a literal: it passes enum values and guards
each change with the states the table allows it from (:meth:`StateTable.sources`), so a webhook that
arrives late or twice leaves a row where it is. ``tests/telephony/test_call_states.py`` walks both.
"""

from __future__ import annotations

from enum import StrEnum

from alarm_centre.escalation.states import StateTable


class Direction(StrEnum):
    """Who rang first: a unit or a resident calling the centre, or an operator dialling out."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallState(StrEnum):
    #: An inbound call in the queue: offered to operators in turn, the caller hears hold music.
    WAITING = "waiting"
    #: Nobody here answered in time: the partner centre's number is ringing.
    OVERFLOW = "overflow"
    #: An operator dialled out: their own phone or console rings first.
    DIALING = "dialing"
    #: Someone took the call; the conference is live (and recorded).
    CONNECTED = "connected"
    ENDED = "ended"


class CallResult(StrEnum):
    """How a call ended (``calls.result``)."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up before anyone answered
    UNANSWERED = "unanswered"  # nobody answered, the overflow included
    FAILED = "failed"  # Twilio could not place the operator's leg of an outbound call
    CANCELLED = "cancelled"  # the operator hung up before their own phone was answered


class LegRole(StrEnum):
    """Who a leg reaches."""

    CALLER = "caller"  # the unit or person who called in
    OPERATOR = "operator"  # one of ours (offered an inbound call, or dialling out)
    PARTY = "party"  # someone an operator dialled: the resident, a responder, the emergency services
    OVERFLOW = "overflow"  # the partner centre


class LegState(StrEnum):
    #: To be placed by the runner (after commit): no Twilio sid yet.
    QUEUED = "queued"
    #: Placed; its phone rings until ``due_at``.
    RINGING = "ringing"
    #: We stop it ringing (offer timed out, declined, answered elsewhere, overflow); the runner cancels it.
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    #: We hang it up (a transfer went through, the last of ours left); the runner ends it at Twilio.
    HANGING_UP = "hanging_up"
    ENDED = "ended"
    UNANSWERED = "unanswered"


#: Legs still connected or about to be: what keeps a conference going.
LIVE_LEGS: frozenset[LegState] = frozenset({LegState.ANSWERED, LegState.HANGING_UP})
#: Legs of the centre's people that keep a call going: on it, or still ringing for it.
STAFF_STAYING: frozenset[LegState] = frozenset({LegState.ANSWERED, LegState.QUEUED, LegState.RINGING})
#: Legs whose phone may still be answered.
RINGING_LEGS: frozenset[LegState] = frozenset({LegState.QUEUED, LegState.RINGING, LegState.CANCELLING})
#: Roles that speak for the centre (an inbound call ends when the last of them leaves).
STAFF_ROLES: frozenset[LegRole] = frozenset({LegRole.OPERATOR, LegRole.OVERFLOW})

CALLS: StateTable[CallState] = StateTable(
    "a call",
    {
        CallState.WAITING: frozenset({CallState.OVERFLOW, CallState.CONNECTED, CallState.ENDED}),
        CallState.OVERFLOW: frozenset({CallState.CONNECTED, CallState.ENDED}),
        CallState.DIALING: frozenset({CallState.CONNECTED, CallState.ENDED}),
        CallState.CONNECTED: frozenset({CallState.ENDED}),
        CallState.ENDED: frozenset(),
    },
)

#: A leg is placed, rings, and is answered or not; a cancel may lose the race with an answer.
LEGS: StateTable[LegState] = StateTable(
    "a call leg",
    {
        # Answered before the REST call that placed it returned (Twilio's callback can overtake it).
        LegState.QUEUED: frozenset(
            {LegState.RINGING, LegState.ANSWERED, LegState.UNANSWERED, LegState.CANCELLING}
        ),
        LegState.RINGING: frozenset({LegState.ANSWERED, LegState.UNANSWERED, LegState.CANCELLING}),
        LegState.CANCELLING: frozenset({LegState.UNANSWERED, LegState.ANSWERED}),
        LegState.ANSWERED: frozenset({LegState.ENDED, LegState.HANGING_UP}),
        LegState.HANGING_UP: frozenset({LegState.ENDED}),
        LegState.ENDED: frozenset(),
        LegState.UNANSWERED: frozenset(),
    },
)


class Verdict(StrEnum):
    """A reviewer's verdict on one audited call."""

    MEETS = "meets_standard"
    IMPROVE = "needs_improvement"
    CONCERN = "cause_for_concern"


class DrawReason(StrEnum):
    """Why a call was drawn for the monthly audit."""

    EMERGENCY = "emergency_services"
    RANDOM = "random"
