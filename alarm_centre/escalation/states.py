"""Escalation's closed sets of values and its three state machines, each one table.

Due steps (``escalation_steps.state``), notifications (``notifications.state``) and responder call-outs
(``escalation_callouts.state``) move only along the tables below. The store code never writes a state
as an SQL literal: it passes enum values as parameters and guards every state change with the states
the table allows it from (:meth:`StateTable.sources`), so a row the table says may not move stays put.
``tests/escalation/test_escalation_states.py`` walks every pair of states through each table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar


class StepKind(StrEnum):
    """Why a due step exists: the alert's snapshotted policy, or a responder call-out."""

    POLICY = "policy"
    RESPONDER = "responder"


class StepAction(StrEnum):
    """What a policy step does when it falls due (the ``action`` of a policy step)."""

    HIGHLIGHT = "highlight"
    SMS = "sms"
    CALL = "call"


class ResponderAction(StrEnum):
    """What a call-out step does: contact the responder at its position, or move past them."""

    CONTACT = "contact"
    ADVANCE = "advance"


class Channel(StrEnum):
    """How a notification goes out."""

    SMS = "sms"
    CALL = "call"


class Purpose(StrEnum):
    """Whom a notification is for."""

    SUPERVISOR = "supervisor"
    RESPONDER = "responder"


class PolicySource(StrEnum):
    """Where the policy in force for a priority came from."""

    CONFIG = "config"
    API = "api"


class ReplyResult(StrEnum):
    """What an inbound text or key press did (it decides the answer Twilio reads back)."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    UNREADABLE = "unreadable"
    LATE = "late"
    SUPERVISOR = "supervisor"
    #: A supervisor said YES (or pressed 1) to a raised alert: it is now acknowledged by them, and every
    #: pending notification for it stops, on every channel.
    ACKNOWLEDGED = "acknowledged"
    IGNORED = "ignored"


class StepState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    FAILED = "failed"


class NotificationState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CalloutState(StrEnum):
    ACTIVE = "active"
    EXHAUSTED = "exhausted"
    ACCEPTED = "accepted"
    UNAVAILABLE = "unavailable"


S = TypeVar("S", bound=StrEnum)


class IllegalStateChange(Exception):
    """A move that a state table does not allow."""

    def __init__(self, machine: str, current: StrEnum, target: StrEnum) -> None:
        super().__init__(f"{machine} cannot go from {current.value} to {target.value}")
        self.machine = machine
        self.current = current
        self.target = target


class StateTable(Generic[S]):
    """One state machine: for each state, the states it may move to."""

    def __init__(self, machine: str, moves: Mapping[S, frozenset[S]]) -> None:
        self.machine = machine
        self.moves = dict(moves)

    def allows(self, current: S, target: S) -> bool:
        return target in self.moves.get(current, frozenset())

    def check(self, current: S, target: S) -> S:
        """``target`` if the table allows the move, else :class:`IllegalStateChange`."""
        if not self.allows(current, target):
            raise IllegalStateChange(self.machine, current, target)
        return target

    def sources(self, target: S) -> tuple[S, ...]:
        """The states that may move to ``target`` (the guard of an SQL ``UPDATE ... SET state``)."""
        return tuple(s for s, nexts in self.moves.items() if target in nexts)


#: A due step is performed, skipped, cancelled or fails exactly once.
STEPS: StateTable[StepState] = StateTable(
    "an escalation step",
    {
        StepState.PENDING: frozenset(
            {StepState.DONE, StepState.SKIPPED, StepState.CANCELLED, StepState.FAILED}
        ),
        StepState.DONE: frozenset(),
        StepState.SKIPPED: frozenset(),
        StepState.CANCELLED: frozenset(),
        StepState.FAILED: frozenset(),
    },
)

#: A notification waits (``pending``, claimed under a lease or not) until it is sent, cancelled or given
#: up. A failed delivery reported by Twilio puts a sent one back to ``pending`` for a retry, or fails it.
#: A send that raced a cancellation is still recorded as ``sent``: the record says what went out.
NOTIFICATIONS: StateTable[NotificationState] = StateTable(
    "a notification",
    {
        NotificationState.PENDING: frozenset(
            {NotificationState.SENT, NotificationState.FAILED, NotificationState.CANCELLED}
        ),
        NotificationState.SENT: frozenset(
            {NotificationState.DELIVERED, NotificationState.PENDING, NotificationState.FAILED}
        ),
        NotificationState.DELIVERED: frozenset({NotificationState.PENDING, NotificationState.FAILED}),
        NotificationState.CANCELLED: frozenset({NotificationState.SENT}),
        NotificationState.FAILED: frozenset(),
    },
)

#: A call-out starts ``active`` (responders are contacted in order), ``exhausted`` (nobody to contact) or
#: ``unavailable`` (Twilio disabled, final). It ends ``accepted`` or ``exhausted``; a YES that comes
#: after exhaustion is still taken.
CALLOUTS: StateTable[CalloutState] = StateTable(
    "a call-out",
    {
        CalloutState.ACTIVE: frozenset({CalloutState.EXHAUSTED, CalloutState.ACCEPTED}),
        CalloutState.EXHAUSTED: frozenset({CalloutState.ACCEPTED}),
        CalloutState.ACCEPTED: frozenset(),
        CalloutState.UNAVAILABLE: frozenset(),
    },
)


def marks(values: tuple[object, ...]) -> str:
    """``?, ?, ...``: one placeholder per value, for ``column IN (...)``."""
    return ", ".join("?" for _ in values)
