"""The audit vocabulary: every action an alert's timeline records (``alert_log.action``).

One closed set, written by the store and the features through ``log_action`` and compared by listeners
(``AlertChange.action``). The values are what is stored and what the console and API show, so they never
change; a new kind of timeline entry is a new member here.
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    """What happened to an alert, as its timeline says it."""

    # intake: what device events did
    RAISED = "raised"
    REPEAT = "repeat"
    CALL_CONNECTED = "call_connected"
    RESIDENT_CANCELLED = "resident_cancelled"
    UNIT_RESTORED = "unit_restored"  # a restore of a help or urgent condition: the alert stays open
    GROUPED = "grouped"
    # operators
    ACKNOWLEDGED = "acknowledged"
    REASSIGNED = "reassigned"
    NOTE = "note"
    RESOLVED = "resolved"
    # device commands (the outbox)
    NO_UNIT_TO_CALL = "no_unit_to_call"
    COMMAND_SENT = "command_sent"
    COMMAND_FAILED = "command_failed"
    CMD_RESULT = "cmd_result"
    COMMANDS_CANCELLED = "commands_cancelled"
    # escalation policy
    ESCALATION_SCHEDULED = "escalation_scheduled"
    ESCALATION_HIGHLIGHT = "escalation_highlight"
    ESCALATION_NOTIFY = "escalation_notify"
    ESCALATION_SKIPPED = "escalation_skipped"
    ESCALATION_STOPPED = "escalation_stopped"
    # notifications (SMS, calls)
    NOTIFICATION_SENT = "notification_sent"
    NOTIFICATION_STATUS = "notification_status"
    NOTIFICATION_FAILED = "notification_failed"
    SUPERVISOR_REPLIED = "supervisor_replied"
    # responder call-out
    RESPONDER_CALLOUT_STARTED = "responder_callout_started"
    RESPONDER_CALLOUT_UNAVAILABLE = "responder_callout_unavailable"
    NO_RESPONDERS = "no_responders"
    RESPONDER_CONTACTED = "responder_contacted"
    RESPONDER_NO_ANSWER = "responder_no_answer"
    RESPONDER_REPLIED = "responder_replied"
    RESPONDER_ACCEPTED = "responder_accepted"
    RESPONDER_DECLINED = "responder_declined"
    RESPONDERS_EXHAUSTED = "responders_exhausted"
    # forwarding to an upstream monitoring centre (SIA DC-09)
    FORWARD_SENT = "forward_sent"
    FORWARD_ACKED = "forward_acked"
    FORWARD_NAK = "forward_nak"
    FORWARD_DUH = "forward_duh"
    FORWARD_NO_ANSWER = "forward_no_answer"
    FORWARD_SWITCHED = "forward_switched"
    FORWARD_FAILED = "forward_failed"
    # calls: the speech call on the alert (telephony, issue 15; docs/telephony.md)
    CALL_IN = "call_in"  # a call came in and was matched to this alert (or raised it)
    CALL_QUEUED = "call_queued"  # nobody to offer it to yet: the caller waits
    CALL_OFFERED = "call_offered"
    CALL_OFFER_UNANSWERED = "call_offer_unanswered"  # rang out, busy, declined, or stopped
    CALL_ANSWERED = "call_answered"
    CALL_OVERFLOWED = "call_overflowed"
    CALL_DIALLED = "call_dialled"  # an operator dialled out from the alert card
    CALL_PARTY_ADDED = "call_party_added"
    CALL_PARTY_ANSWERED = "call_party_answered"
    CALL_PARTY_UNANSWERED = "call_party_unanswered"
    CALL_TRANSFERRED = "call_transferred"
    CALL_LEFT = "call_left"  # one party hung up; the call goes on
    CALL_ENDED = "call_ended"
    CALL_FAILED = "call_failed"  # Twilio would not place a leg
    CALL_RECORDED = "call_recorded"
    CALL_RECORDING_PLAYED = "call_recording_played"
    CALL_RECORDING_DELETED = "call_recording_deleted"
