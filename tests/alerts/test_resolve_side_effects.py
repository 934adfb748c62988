"""A resolved alert stops its side effects (issue item 3), on SQLite and PostgreSQL.

Alert 11 was resolved at 02:15:10, yet ``call_centre`` attempts 4 and 5 still went to the unit at
02:16:10 and 02:18:11. Here the real outbox loop runs on a real store with an injected clock: after a
resolve no command for the alert goes out, whether it was pending or already claimed, and the
timeline says what was cancelled. Escalation steps and supervisor notifications stop the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import eventually

from alarm_centre.alerts.model import OutboxItem
from alarm_centre.escalation.engine import Escalation, EscalationSettings
from alarm_centre.escalation.policy import PolicyStep
from alarm_centre.escalation.states import StepAction
from alarm_centre.host import HookOrder
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from bridge.metrics import BridgeMetrics
from bridge.outbox import OutboxDispatcher
from devices.cancellation import stop
from devices.events import DeviceEvent
from devices.vocabulary import EventType

SUPERVISOR = "+447700900001"


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


class Clock:
    """Wall time plus an offset the test moves forward (the outbox's retry schedule is minutes long)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Unit:
    """The MQTT channel's place in the dispatcher: records each command it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[OutboxItem] = []
        self.changed = asyncio.Event()

    async def __call__(self, target: str, item: OutboxItem) -> None:
        self.sent.append(item)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(15):
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running_outbox(
    store: AlertStore, clock: Clock, unit: Unit
) -> AsyncIterator[tuple[OutboxDispatcher, BridgeMetrics]]:
    metrics = BridgeMetrics("test")
    dispatcher = OutboxDispatcher(store, metrics, poll_s=0.05, clock=clock)
    dispatcher.add_channel("mqtt", unit)
    task = asyncio.create_task(dispatcher.run(), name="outbox")
    try:
        yield dispatcher, metrics
    finally:
        await stop(task)


def count_claims(
    store: AlertStore, after_claim: Callable[[list[OutboxItem]], Awaitable[None]] | None = None
) -> list[int]:
    """Count the dispatcher's claim passes (and optionally act right after one, before any send)."""
    passes = [0]
    real = store.outbox.claim

    async def claim(**kwargs: Any) -> list[OutboxItem]:
        items = await real(**kwargs)
        if after_claim is not None:
            await after_claim(items)
        passes[0] += 1
        return items

    store.outbox.claim = claim  # type: ignore[method-assign]
    return passes


async def two_more_passes(passes: list[int]) -> None:
    """Wait until the loop has claimed twice more: the first pass's sends are then all done."""
    target = passes[0] + 2

    async def done() -> bool:
        return passes[0] >= target

    await eventually(done)


async def actions(store: AlertStore, alert_id: str) -> list[tuple[str, dict[str, Any]]]:
    _, entries = await store.get_alert(alert_id)
    return [(e.action, e.detail) for e in entries]


async def operator_resolves(store: AlertStore, alert_id: str) -> None:
    await store.acknowledge(alert_id, actor="olive", source="console")
    await store.resolve(alert_id, outcome="resident_ok", note=None, actor="olive", source="console")


async def test_no_call_centre_retry_goes_out_after_the_alert_is_resolved(store: AlertStore) -> None:
    await store.devices.upsert_device("unit-r", "gsm_unit")
    [result] = await store.ingest([event("unit-r", "pendant")])
    assert result.alert_id is not None
    clock, unit = Clock(), Unit()
    passes = count_claims(store)
    async with running_outbox(store, clock, unit) as (dispatcher, _):
        await unit.wait_for(1)
        clock.offset += 16  # the unit has not answered: the first retry is due after 15 s
        dispatcher.wake()
        await unit.wait_for(2)
        assert [i.payload["cmd"] for i in unit.sent] == ["call_centre", "call_centre"]

        await operator_resolves(store, result.alert_id)
        assert await store.outbox.pending() == 0, "resolving closes the alert's pending commands"
        clock.offset += 3600  # every retry that was still to come is now due
        dispatcher.wake()
        await two_more_passes(passes)
    assert len(unit.sent) == 2, [i.attempts for i in unit.sent]
    timeline = await actions(store, result.alert_id)
    cancelled = [d for a, d in timeline if a == "commands_cancelled"]
    assert len(cancelled) == 1
    assert [c["cmd"] for c in cancelled[0]["commands"]] == ["call_centre"]
    assert cancelled[0]["commands"][0]["target"] == "unit-r"
    names = [a for a, _ in timeline]
    assert names.index("commands_cancelled") > names.index("resolved")


async def test_a_command_claimed_before_the_resolve_is_not_sent_after_it(store: AlertStore) -> None:
    await store.devices.upsert_device("unit-s", "gsm_unit")
    [result] = await store.ingest([event("unit-s", "pendant")])
    assert result.alert_id is not None
    alert_id = result.alert_id

    async def resolve_between_claim_and_send(items: list[OutboxItem]) -> None:
        if any(i.alert_id == alert_id for i in items):
            await operator_resolves(store, alert_id)

    passes = count_claims(store, resolve_between_claim_and_send)
    clock, unit = Clock(), Unit()
    async with running_outbox(store, clock, unit) as (_, metrics):
        await two_more_passes(passes)
        assert await store.outbox.pending() == 0
    assert unit.sent == []
    assert metrics.commands.labels("call_centre", "cancelled")._value.get() == 1
    assert "commands_cancelled" in [a for a, _ in await actions(store, alert_id)]


async def test_a_left_over_command_of_a_resolved_alert_is_closed_not_claimed(store: AlertStore) -> None:
    """Rows queued before this fix (or by any future path) are caught at claim time too."""
    await store.devices.upsert_device("unit-t", "gsm_unit")
    [result] = await store.ingest([event("unit-t", "pendant")])
    assert result.alert_id is not None
    await operator_resolves(store, result.alert_id)

    async def reopen(tx: Any, post: Any) -> None:
        await tx.execute("UPDATE outbox SET done_at = NULL WHERE alert_id = ?", int(result.alert_id or 0))

    await store.transaction(reopen)
    assert await store.outbox.pending() == 1
    assert await store.outbox.claim(now=time.time() + 3600) == []
    assert await store.outbox.pending() == 0


async def escalating(store: AlertStore) -> Escalation:
    escalation = Escalation(store, EscalationSettings(supervisor_numbers=(SUPERVISOR,), twilio_enabled=True))
    store.add_raise_hook(escalation.on_raise, HookOrder.ESCALATION)
    store.add_resolve_hook(escalation.on_resolve, HookOrder.ESCALATION)
    await escalation.sync_policies(
        {
            1: [PolicyStep(0, StepAction.SMS), PolicyStep(600, StepAction.CALL)],
            3: [PolicyStep(300, StepAction.SMS)],
        }
    )
    return escalation


async def pending_steps(store: AlertStore, alert_id: str) -> int:
    async with store.read() as tx:
        row = await tx.fetchone(
            "SELECT COUNT(*) AS n FROM escalation_steps WHERE alert_id = ? AND state = 'pending'",
            int(alert_id),
        )
    assert row is not None
    return int(row["n"])


async def test_a_system_resolution_cancels_escalation_in_the_same_transaction(store: AlertStore) -> None:
    await escalating(store)
    [raised] = await store.ingest([event("unit-m", "mains_fail")])
    assert raised.alert_id is not None
    assert await pending_steps(store, raised.alert_id) == 1
    await store.ingest([event("unit-m", "mains_restored")])
    assert await pending_steps(store, raised.alert_id) == 0
    stopped = [d for a, d in await actions(store, raised.alert_id) if a == "escalation_stopped"]
    assert stopped and stopped[0]["escalation_steps"] == 1


async def test_a_claimed_supervisor_notification_is_not_sent_once_the_alert_is_resolved(
    store: AlertStore,
) -> None:
    escalation = await escalating(store)
    [raised] = await store.ingest([event("unit-n", "pendant")])
    assert raised.alert_id is not None
    await escalation.run_due_steps(now=time.time())
    [note] = await escalation.claim_notifications()
    assert note.to == SUPERVISOR
    await operator_resolves(store, raised.alert_id)
    assert await escalation.void_reason(note) is not None
    async with store.read() as tx:
        row = await tx.fetchone("SELECT state FROM notifications WHERE id = ?", note.id)
    assert row is not None and row["state"] == "cancelled"
    assert await pending_steps(store, raised.alert_id) == 0, "the 600 s call step is cancelled as well"


async def test_the_notifier_does_not_send_a_claimed_notification_of_a_resolved_alert(
    store: AlertStore,
) -> None:
    """The real runner and Twilio client against the local Twilio stand-in: nothing reaches it."""
    from prometheus_client import CollectorRegistry

    from alarm_centre.escalation.metrics import EscalationMetrics
    from alarm_centre.escalation.notify import Notifier
    from alarm_centre.escalation.runner import EscalationRunner
    from simulators.twilio_server import TwilioServer

    escalation = await escalating(store)
    [raised] = await store.ingest([event("unit-tw", "pendant")])
    assert raised.alert_id is not None
    await escalation.run_due_steps(now=time.time())
    [note] = await escalation.claim_notifications()
    await operator_resolves(store, raised.alert_id)
    metrics = EscalationMetrics(CollectorRegistry())
    async with (
        TwilioServer() as twilio,
        Notifier(
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            from_number="+441632960000",
            api_base_url=twilio.base_url,
            request_timeout=3,
        ) as notifier,
    ):
        runner = EscalationRunner(escalation, notifier, metrics, public_url=lambda: "http://127.0.0.1:9")
        await runner.deliver(note)
        assert twilio.attempts == [] and twilio.messages == []
    assert metrics.notifications.labels("sms", "supervisor", "cancelled")._value.get() == 1
