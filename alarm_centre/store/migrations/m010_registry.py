"""Installers' registry: device transport columns, heartbeat supervision, commissioning visits,
remote configuration versions, per-device MQTT credentials and the registry's own audit log."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        10,
        """
ALTER TABLE devices ADD COLUMN imei TEXT;
ALTER TABLE devices ADD COLUMN heartbeat_grace_s INTEGER;
ALTER TABLE devices ADD COLUMN heartbeat_due_at {real};
ALTER TABLE devices ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN config_applied_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN retired_at {real};
CREATE UNIQUE INDEX devices_imei ON devices(imei);
CREATE INDEX devices_heartbeat_due ON devices(heartbeat_due_at);
CREATE TABLE commissioning_visits (
    id {pk},
    device_id TEXT NOT NULL,
    installer TEXT NOT NULL,
    started_at {real} NOT NULL,
    ends_at {real} NOT NULL,
    finished_at {real},
    finish_reason TEXT,
    checklist TEXT NOT NULL,
    note TEXT,
    summary TEXT
);
CREATE INDEX commissioning_open ON commissioning_visits(device_id, finished_at);
CREATE INDEX commissioning_ends ON commissioning_visits(finished_at, ends_at);
CREATE TABLE commissioning_checks (
    visit_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    peripheral_id TEXT,
    alert_id BIGINT,
    at {real} NOT NULL,
    PRIMARY KEY (visit_id, event_id)
);
CREATE TABLE device_configs (
    device_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    settings TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at {real} NOT NULL,
    cmd_id TEXT NOT NULL,
    applied_at {real},
    superseded_at {real},
    PRIMARY KEY (device_id, version)
);
CREATE UNIQUE INDEX device_configs_cmd ON device_configs(cmd_id);
CREATE TABLE device_credentials (
    device_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    issued_at {real} NOT NULL,
    issued_by TEXT NOT NULL,
    revoked_at {real}
);
CREATE TABLE registry_log (
    id {pk},
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX registry_log_subject ON registry_log(subject, id);
""",
    ),
]
