"""The audit vocabulary is one closed set (``AuditAction``): every timeline entry the store writes is a
member, the stored values are the strings the console and API have always shown, and no code writes an
audit row with a free string."""

from __future__ import annotations

import ast
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarm_centre.alerts.audit import AuditAction
from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.sqlite import SqliteStore
from devices.events import DeviceEvent
from devices.vocabulary import EventType

ROOT = Path(__file__).resolve().parents[2]


def event(device_id: str, kind: str) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        event_id=uuid.uuid4().hex[:16],
        type=EventType(kind),
        received_at=datetime.now(UTC),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "alerts.db") as opened:
        yield opened


async def test_timeline_rows_are_audit_actions_with_their_old_values(
    store: SqliteStore, tmp_path: Path
) -> None:
    heard: list[AlertChange] = []

    def listen(changes: Sequence[AlertChange]) -> None:
        heard.extend(changes)

    store.add_listener(listen)
    await store.devices.upsert_device("unit-1", "gsm_unit")
    [first] = await store.ingest([event("unit-1", "pendant")])
    await store.ingest([event("unit-1", "fall")])
    alert_id = str(first.alert_id)
    [item] = await store.outbox.claim()
    await store.outbox.sent(item)
    await store.acknowledge(alert_id, actor="alice", source="api")
    await store.alerts.add_note(alert_id, note="spoke to her", actor="alice", source="api")
    await store.resolve(alert_id, outcome="resident_ok", note=None, actor="alice", source="api")

    _, timeline = await store.get_alert(alert_id)
    assert [t.action for t in timeline] == [
        "raised",
        "repeat",
        "command_sent",
        "acknowledged",
        "note",
        "resolved",
        "commands_cancelled",
    ]
    assert all(type(c.action) is AuditAction for c in heard), "listeners compare enum members"
    with sqlite3.connect(tmp_path / "alerts.db") as db:
        stored = {row[0] for row in db.execute("SELECT DISTINCT action FROM alert_log")}
    assert stored <= {a.value for a in AuditAction}


def test_no_audit_row_is_written_with_a_free_string() -> None:
    """A guard for the class of fault: every ``log_action`` call names its action by an AuditAction
    member (a string literal there would escape the closed set)."""
    offenders = []
    for folder in ("alarm_centre", "bridge", "skills"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "log_action"
                    and len(node.args) > 3
                ):
                    literals = [
                        c
                        for c in ast.walk(node.args[3])
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)
                    ]
                    if literals:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
