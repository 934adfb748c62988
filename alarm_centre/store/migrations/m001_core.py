"""The core schema: residents, devices, events, alerts and their log, the outbox, users."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
CREATE TABLE residents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_at {real} NOT NULL
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    resident_id TEXT REFERENCES residents(id),
    channel TEXT NOT NULL DEFAULT 'mqtt',
    phone TEXT,
    alexa_device_id TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    test_mode_until {real},
    last_seen_at {real},
    online INTEGER,
    heartbeat_interval_s INTEGER,
    data TEXT NOT NULL DEFAULT '{}',
    created_at {real} NOT NULL
);
CREATE INDEX devices_resident ON devices(resident_id);
CREATE UNIQUE INDEX devices_phone ON devices(phone);
CREATE UNIQUE INDEX devices_alexa ON devices(alexa_device_id);
CREATE TABLE events (
    device_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    ts {real},
    received_at {real} NOT NULL,
    source TEXT NOT NULL,
    test INTEGER NOT NULL,
    data TEXT NOT NULL,
    alert_id BIGINT,
    PRIMARY KEY (device_id, event_id)
);
CREATE TABLE alerts (
    id {pk},
    device_id TEXT NOT NULL,
    resident_id TEXT,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    open_key TEXT,
    raised_at {real} NOT NULL,
    acknowledged_at {real},
    acknowledged_by TEXT,
    resolved_at {real},
    resolved_by TEXT,
    outcome TEXT,
    note TEXT,
    repeat_count INTEGER NOT NULL DEFAULT 0,
    test INTEGER NOT NULL DEFAULT 0,
    unregistered INTEGER NOT NULL DEFAULT 0,
    clock_skew INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL DEFAULT '{}',
    updated_at {real} NOT NULL
);
CREATE UNIQUE INDEX alerts_open_key ON alerts(open_key);
CREATE INDEX alerts_queue ON alerts(state, priority, raised_at, id);
CREATE INDEX alerts_device ON alerts(device_id, id);
CREATE TABLE alert_log (
    id {pk},
    alert_id BIGINT NOT NULL,
    at {real} NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_log_alert ON alert_log(alert_id, id);
CREATE TABLE outbox (
    id {pk},
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    alert_id BIGINT,
    cmd_id TEXT UNIQUE,
    payload TEXT NOT NULL,
    created_at {real} NOT NULL,
    next_attempt_at {real} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_at {real},
    result TEXT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox(done_at, next_attempt_at);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    password_hash TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at {real} NOT NULL
);
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY,
    at {real} NOT NULL
);
""",
    ),
]
