"""Alerts, timeline entries, users and roles as plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.lifecycle import AlertState


class Role(StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    INSTALLER = "installer"
    ADMIN = "admin"


#: What each role may do. Supervisors and admins can handle alerts; installers cannot. Which of a
#: resident's fields each role may see is decided by one other table:
#: :data:`alarm_centre.privacy.need_to_know.NEED_TO_KNOW` (docs/data-protection.md).
#: ``privacy:audit``: read and export the audit of reads; ``privacy:subject_access``: export everything
#: held about a resident; ``privacy:erase``: erase a resident on request; ``privacy:retention``: run the
#: retention job now and read its runs.
ROLE_RIGHTS: dict[Role, frozenset[str]] = {
    # Operators read residents and devices (address, key safe, responders) to handle a call; they change none.
    Role.OPERATOR: frozenset({"alerts:read", "alerts:handle", "devices:read", "residents:read"}),
    Role.SUPERVISOR: frozenset(
        {
            "alerts:read",
            "alerts:handle",
            "alerts:reassign",
            "service_levels:read",
            "calls:review",  # play call recordings, the monthly call audit
            "devices:read",
            "residents:read",
            "privacy:audit",
        }
    ),
    Role.INSTALLER: frozenset(
        {"alerts:read", "devices:read", "devices:write", "residents:read", "residents:write"}
    ),
    Role.ADMIN: frozenset(
        {
            "alerts:read",
            "alerts:handle",
            "alerts:reassign",
            "service_levels:read",
            "devices:read",
            "devices:write",
            "residents:read",
            "residents:write",
            "users:write",
            "escalation:write",
            "privacy:audit",
            "privacy:subject_access",
            "privacy:erase",
            "privacy:retention",
            "calls:review",
        }
    ),
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role

    def can(self, right: str) -> bool:
        return right in ROLE_RIGHTS[self.role]


def iso(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with milliseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float
    action: str
    actor: str
    source: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "action": self.action,
            "actor": self.actor,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    device_id: str
    resident_id: str | None
    type: str
    priority: int
    state: AlertState
    raised_at: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    resolved_at: float | None
    resolved_by: str | None
    outcome: str | None
    note: str | None
    repeat_count: int
    test: bool
    unregistered: bool
    clock_skew: bool
    updated_at: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device_id": self.device_id,
            "resident_id": self.resident_id,
            "type": self.type,
            "priority": self.priority,
            "state": self.state.value,
            "raised_at": iso(self.raised_at),
            "acknowledged_at": iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "outcome": self.outcome,
            "note": self.note,
            "repeat_count": self.repeat_count,
            "test": self.test,
            "unregistered": self.unregistered,
            "clock_skew": self.clock_skew,
            "updated_at": iso(self.updated_at),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Published after a commit that changed an alert: the console streams and metrics listen."""

    alert_id: str
    action: AuditAction
    priority: int
    state: str
    #: A call for help's alert as committed (its API JSON), read in the transaction that changed it: the
    #: live feed pushes it without reading it again (:mod:`alarm_centre.alerts.feed`). None otherwise.
    alert: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A side effect produced inside a commit and performed after it (a device command, a notification)."""

    id: int
    kind: str
    channel: str
    target: str
    alert_id: str | None
    cmd_id: str | None
    payload: dict[str, Any]
    attempts: int
