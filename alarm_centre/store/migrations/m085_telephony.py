"""Telephony (issue 15): the centre's calls, their legs, their recordings, operators' presence, the monthly
call audit, and a resident's own phone number (callers are matched on it).

- ``calls``: one row per call, inbound (a unit or a resident calling the centre) or outbound (an operator
  dialling from the alert card). Every call is one Twilio conference named ``conference``; it always
  belongs to an alert. ``state`` moves along ``alarm_centre/telephony/states.py``; ``pending`` holds the
  party an operator dialled until their own phone is answered.
- ``call_legs``: each party of a call: the caller, each operator a call is offered to, a party dialled,
  the overflow centre. A leg with no ``sid`` yet is still to be placed (after commit, by the runner);
  ``transfer_from`` names the operator who hands the call over when this leg answers.
- ``call_recordings``: what Twilio reported; the audio stays at Twilio until ``delete_due_at`` and is
  only ever played through the bridge.
- ``operator_presence``: who takes calls now, and since when they have been idle (longest idle first).
- ``call_reviews``: the calls drawn for each handler's monthly audit and the reviewer's findings.
"""

from __future__ import annotations

SQL = """
ALTER TABLE residents ADD COLUMN phone TEXT;
CREATE INDEX residents_phone ON residents(phone);
CREATE TABLE calls (
    id {pk},
    alert_id BIGINT NOT NULL,
    direction TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    caller TEXT NOT NULL DEFAULT '',
    called TEXT NOT NULL DEFAULT '',
    call_sid TEXT,
    conference TEXT NOT NULL,
    conference_sid TEXT,
    matched TEXT NOT NULL DEFAULT '',
    operator TEXT,
    started_by TEXT,
    emergency INTEGER NOT NULL DEFAULT 0,
    signal_at {real},
    started_at {real} NOT NULL,
    answered_at {real},
    speech_at {real},
    ended_at {real},
    overflow_at {real},
    pending TEXT,
    updated_at {real} NOT NULL
);
CREATE UNIQUE INDEX calls_sid ON calls(call_sid);
CREATE UNIQUE INDEX calls_conference ON calls(conference);
CREATE INDEX calls_alert ON calls(alert_id, id);
CREATE INDEX calls_state ON calls(state, overflow_at);
CREATE INDEX calls_started ON calls(started_at);
CREATE TABLE call_legs (
    id {pk},
    call_id BIGINT NOT NULL,
    role TEXT NOT NULL,
    party TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    sid TEXT,
    emergency INTEGER NOT NULL DEFAULT 0,
    transfer_from TEXT,
    offered_at {real} NOT NULL,
    due_at {real},
    answered_at {real},
    ended_at {real},
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until {real},
    result TEXT,
    updated_at {real} NOT NULL
);
CREATE UNIQUE INDEX call_legs_sid ON call_legs(sid);
CREATE INDEX call_legs_call ON call_legs(call_id, id);
CREATE INDEX call_legs_work ON call_legs(state, due_at);
CREATE INDEX call_legs_party ON call_legs(party, state);
CREATE TABLE call_recordings (
    id {pk},
    sid TEXT NOT NULL,
    call_id BIGINT NOT NULL,
    alert_id BIGINT NOT NULL,
    duration_s INTEGER NOT NULL DEFAULT 0,
    channels INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL,
    media_url TEXT,
    created_at {real} NOT NULL,
    delete_due_at {real} NOT NULL,
    deleted_at {real},
    delete_attempts INTEGER NOT NULL DEFAULT 0,
    lease_until {real}
);
CREATE UNIQUE INDEX call_recordings_sid ON call_recordings(sid);
CREATE INDEX call_recordings_call ON call_recordings(call_id);
CREATE INDEX call_recordings_due ON call_recordings(deleted_at, delete_due_at);
CREATE TABLE operator_presence (
    name TEXT PRIMARY KEY,
    available INTEGER NOT NULL DEFAULT 0,
    idle_since {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE call_reviews (
    id {pk},
    month TEXT NOT NULL,
    handler TEXT NOT NULL,
    call_id BIGINT NOT NULL,
    reason TEXT NOT NULL,
    drawn_at {real} NOT NULL,
    drawn_by TEXT NOT NULL,
    verdict TEXT,
    findings TEXT,
    reviewer TEXT,
    reviewed_at {real}
);
CREATE UNIQUE INDEX call_reviews_once ON call_reviews(month, handler, call_id);
CREATE INDEX call_reviews_month ON call_reviews(month, handler)
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (85, SQL),
]
