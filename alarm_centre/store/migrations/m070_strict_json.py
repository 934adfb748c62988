"""Data repairs: stored JSON text made strict (``NaN``/``Infinity`` written before the strict rules)."""

from __future__ import annotations

from alarm_centre.store.schema import JsonRepair, Migration

#: Every column that holds JSON text.
JSON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("residents", "data"),
    ("devices", "data"),
    ("events", "data"),
    ("alerts", "data"),
    ("alert_log", "detail"),
    ("outbox", "payload"),
    ("outbox", "result"),
    ("commissioning_visits", "checklist"),
    ("commissioning_visits", "summary"),
    ("device_configs", "settings"),
    ("registry_log", "detail"),
    ("escalation_policies", "steps"),
    ("escalation_steps", "target"),
    ("escalation_callouts", "responders"),
)

MIGRATIONS: list[Migration] = [(70, JsonRepair(JSON_COLUMNS))]
