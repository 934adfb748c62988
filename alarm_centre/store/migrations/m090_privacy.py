"""Data protection (docs/data-protection.md): the audit of reads of residents' personal data, erasures
done on request, the retention job's runs, and when an alert was anonymised.

- ``personal_data_reads``: one row per resident whose personal data a request showed: who (``actor``,
  ``role``), when, from where (``source``: console, api, cli; ``address``: the client's), which resident,
  which fields (a JSON list), and why (``purpose``: the route, e.g. ``console.alert_context``).
- ``erasures``: one row per resident erased on request: who, when, the request's reference, and what
  was removed or anonymised (counts); never the resident's id or name.
- ``retention_runs``: one row per run of the retention job, with what it did per kind (counts).
- ``alerts.anonymised_at``: set when retention (or an erasure) has stripped an alert down to what
  service-level statistics need.
"""

from __future__ import annotations

SQL = """
CREATE TABLE personal_data_reads (
    id {pk},
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    source TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    resident_id TEXT NOT NULL,
    fields TEXT NOT NULL,
    purpose TEXT NOT NULL,
    alert_id BIGINT
);
CREATE INDEX personal_data_reads_resident ON personal_data_reads(resident_id, at);
CREATE INDEX personal_data_reads_actor ON personal_data_reads(actor, at);
CREATE INDEX personal_data_reads_at ON personal_data_reads(at);
CREATE TABLE erasures (
    id {pk},
    at {real} NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    reference TEXT NOT NULL,
    counts TEXT NOT NULL
);
CREATE TABLE retention_runs (
    id {pk},
    started_at {real} NOT NULL,
    finished_at {real} NOT NULL,
    node TEXT NOT NULL,
    counts TEXT NOT NULL,
    error TEXT
);
CREATE INDEX retention_runs_started ON retention_runs(started_at);
ALTER TABLE alerts ADD COLUMN anonymised_at {real};
CREATE INDEX alerts_resolved ON alerts(state, resolved_at);
CREATE INDEX events_received ON events(received_at);
CREATE INDEX events_alert ON events(alert_id);
CREATE INDEX notifications_created ON notifications(created_at);
CREATE INDEX voice_checkins_at ON voice_checkins(at)
"""

MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (90, SQL),
]
