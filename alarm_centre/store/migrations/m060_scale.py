"""Scale-out and alarm floods: incidents that group many units' technical alarms of one type."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        60,
        """
CREATE TABLE incidents (
    id {pk},
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    open_key TEXT,
    opened_at {real} NOT NULL,
    closed_at {real},
    closed_reason TEXT
);
CREATE UNIQUE INDEX incidents_open_key ON incidents(open_key);
CREATE INDEX incidents_state ON incidents(state, opened_at, id);
ALTER TABLE alerts ADD COLUMN incident_id BIGINT;
CREATE INDEX alerts_incident ON alerts(incident_id, state);
CREATE INDEX alerts_type_raised ON alerts(type, raised_at)
""",
    ),
]
