"""Escalation: policies per priority, each alert's snapshotted steps, responder call-outs, notifications."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        20,
        """
CREATE TABLE escalation_policies (
    priority INTEGER PRIMARY KEY,
    steps TEXT NOT NULL,
    source TEXT NOT NULL,
    updated_at {real} NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE escalation_steps (
    id {pk},
    alert_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '{}',
    due_at {real} NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    created_at {real} NOT NULL,
    done_at {real},
    result TEXT
);
CREATE UNIQUE INDEX escalation_steps_once ON escalation_steps(alert_id, kind, seq, action);
CREATE INDEX escalation_steps_due ON escalation_steps(state, due_at);
CREATE TABLE escalation_callouts (
    alert_id BIGINT PRIMARY KEY,
    responders TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    accepted_by TEXT,
    started_at {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE notifications (
    id {pk},
    alert_id BIGINT NOT NULL,
    step_id BIGINT,
    purpose TEXT NOT NULL,
    responder_index INTEGER,
    name TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL,
    to_number TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    sid TEXT,
    status TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at {real} NOT NULL,
    lease_until {real},
    claimed_by TEXT,
    last_error TEXT,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL
);
CREATE INDEX notifications_due ON notifications(state, due_at);
CREATE INDEX notifications_sid ON notifications(sid);
CREATE INDEX notifications_alert ON notifications(alert_id, id);
CREATE INDEX notifications_to ON notifications(to_number, id);
CREATE INDEX alerts_raised_at ON alerts(raised_at)
""",
    ),
]
