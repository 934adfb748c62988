"""Voice: wellbeing check-ins said to Alexa, and residents' daily check-in schedules."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        40,
        """
CREATE TABLE voice_checkins (
    id {pk},
    resident_id TEXT,
    device_id TEXT,
    alexa_device_id TEXT,
    request_id TEXT NOT NULL UNIQUE,
    at {real} NOT NULL
);
CREATE INDEX voice_checkins_resident ON voice_checkins(resident_id, at);
CREATE TABLE checkin_schedules (
    resident_id TEXT PRIMARY KEY REFERENCES residents(id),
    deadline TEXT NOT NULL,
    timezone TEXT NOT NULL,
    next_due_at {real} NOT NULL,
    last_missed_at {real},
    updated_at {real} NOT NULL
);
CREATE INDEX checkin_schedules_due ON checkin_schedules(next_due_at);
""",
    ),
]
