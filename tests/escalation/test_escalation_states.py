"""Escalation's state machines: every pair of states through each table, and the tables holding in SQL.

Steps, notifications and call-outs used to move through 'pending', 'sent', 'accepted', ... as SQL
literals with no table; now each is a table in ``alarm_centre/escalation/states.py`` and the store code
guards every state change with it.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

import alarm_centre.escalation as package
from alarm_centre.escalation.engine import Escalation, EscalationSettings
from alarm_centre.escalation.policy import PolicyStep, parse_steps
from alarm_centre.escalation.states import (
    CALLOUTS,
    NOTIFICATIONS,
    STEPS,
    CalloutState,
    IllegalStateChange,
    NotificationState,
    StateTable,
    StepAction,
    StepState,
)
from alarm_centre.host import HookOrder
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import InvalidRequest
from devices.events import DeviceEvent
from devices.vocabulary import EventType

SUPERVISOR = "+447700900001"

#: Every legal move, written out once more by hand: the tables must say exactly this.
LEGAL: dict[str, set[tuple[str, str]]] = {
    "steps": {("pending", "done"), ("pending", "skipped"), ("pending", "cancelled"), ("pending", "failed")},
    "notifications": {
        ("pending", "sent"),
        ("pending", "failed"),
        ("pending", "cancelled"),
        ("sent", "delivered"),
        ("sent", "pending"),
        ("sent", "failed"),
        ("delivered", "pending"),
        ("delivered", "failed"),
        ("cancelled", "sent"),
    },
    "callouts": {("active", "exhausted"), ("active", "accepted"), ("exhausted", "accepted")},
}
TABLES: dict[str, tuple[StateTable[Any], type[StrEnum]]] = {
    "steps": (STEPS, StepState),
    "notifications": (NOTIFICATIONS, NotificationState),
    "callouts": (CALLOUTS, CalloutState),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_transition_of_each_table(name: str) -> None:
    table, states = TABLES[name]
    assert set(table.moves) == set(states), "every state has a row"
    for current, target in itertools.product(states, repeat=2):
        if (current.value, target.value) in LEGAL[name]:
            assert table.check(current, target) is target
            assert current in table.sources(target)
        else:
            with pytest.raises(IllegalStateChange, match=f"from {current.value} to {target.value}"):
                table.check(current, target)
            assert current not in table.sources(target)


def test_no_state_literal_is_left_in_the_escalation_sql() -> None:
    literal = re.compile(r"\b(state|kind|purpose|channel|source|outcome)\s*(=|<>|!=|IN)\s*\(?'", re.I)
    for path in Path(package.__file__).parent.glob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not literal.search(line), f"{path.name}:{n}: {line.strip()}"


def test_step_actions_are_the_enum_and_checked_once() -> None:
    [step] = parse_steps([{"after_s": 5, "action": "sms"}])
    assert step.action is StepAction.SMS
    with pytest.raises(InvalidRequest, match="highlight, sms, call"):
        parse_steps([{"after_s": 5, "action": "fax"}])


def event(device_id: str, kind: str) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        event_id=uuid.uuid4().hex[:16],
        type=EventType(kind),
        received_at=datetime.now(UTC),
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


async def escalating(store: AlertStore) -> Escalation:
    escalation = Escalation(store, EscalationSettings(supervisor_numbers=(SUPERVISOR,), twilio_enabled=True))
    store.add_raise_hook(escalation.on_raise, HookOrder.ESCALATION)
    store.add_resolve_hook(escalation.on_resolve, HookOrder.ESCALATION)
    await escalation.sync_policies({1: [PolicyStep(0, StepAction.SMS)]})
    return escalation


async def note_state(store: AlertStore, note_id: int) -> str:
    async with store.read() as tx:
        row = await tx.fetchone("SELECT state FROM notifications WHERE id = ?", note_id)
    assert row is not None
    return str(row["state"])


async def test_a_failed_notification_is_not_brought_back_by_a_late_status(store: AlertStore) -> None:
    """failed is final: a status callback for a given-up notification records the status, moves nothing."""
    escalation = await escalating(store)
    await store.ingest([event("unit-s", "pendant")])
    await escalation.run_due_steps(now=time.time())
    [note] = await escalation.claim_notifications()
    await escalation.notification_sent(note, sid="SM" + "a" * 32, status="queued")
    assert await note_state(store, note.id) == "sent"
    await escalation.on_status(
        sid="SM" + "a" * 32, status="delivered", failed=False, final=True, error_code=None
    )
    assert await note_state(store, note.id) == "delivered"
    await _force_state(store, note.id, NotificationState.FAILED)
    await escalation.on_status(
        sid="SM" + "a" * 32, status="undelivered", failed=True, final=True, error_code=30005
    )
    assert await note_state(store, note.id) == "failed", "failed -> pending is not in the table"
    await escalation.notification_sent(note, sid="SM" + "b" * 32, status="queued")
    assert await note_state(store, note.id) == "failed", "failed -> sent is not in the table"


async def test_a_cancelled_call_out_step_stays_cancelled(store: AlertStore) -> None:
    """A step that is no longer pending is never cancelled twice (its first reason stays)."""
    escalation = await escalating(store)
    [raised] = await store.ingest([event("unit-c", "pendant")])
    assert raised.alert_id is not None
    await store.acknowledge(raised.alert_id, actor="olive", source="console")
    assert await escalation.stop_for([raised.alert_id]) == 1
    assert await escalation.stop_for([raised.alert_id]) == 0


async def _force_state(store: AlertStore, note_id: int, state: NotificationState) -> None:
    async def work(tx: Any, post: Any) -> None:
        await tx.execute("UPDATE notifications SET state = ? WHERE id = ?", state, note_id)

    await store.transaction(work)


def test_every_reply_result_has_an_sms_and_a_spoken_answer() -> None:
    from alarm_centre.escalation.states import ReplyResult
    from alarm_centre.escalation.twilio import SMS_ANSWERS, VOICE_ANSWERS

    assert set(SMS_ANSWERS) == set(ReplyResult) == set(VOICE_ANSWERS)
