"""The outbox's one home (``store.outbox``): a transport without ``cmd_result`` (SMS) closes what it sent
through it, with what it learnt, instead of writing the outbox table itself."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarm_centre.store.sqlite import SqliteStore
from devices.events import DeviceEvent
from devices.vocabulary import EventType


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "alerts.db") as opened:
        yield opened


async def test_finish_closes_the_item_with_its_result_once(store: SqliteStore) -> None:
    await store.devices.upsert_device("gsm-9", "gsm_unit", channel="sms", phone="+447700900009")
    await store.ingest(
        [
            DeviceEvent(
                device_id="gsm-9",
                event_id=uuid.uuid4().hex[:16],
                type=EventType.PENDANT,
                received_at=datetime.now(UTC),
            )
        ]
    )
    [item] = await store.outbox.claim()
    assert item.channel == "sms" and item.payload["cmd"] == "call_centre"

    await store.outbox.finish(item, {"result": "sms_submitted", "reference": 7})
    await store.outbox.finish(item, {"result": "again"})  # a second close changes nothing

    assert await store.outbox.pending() == 0
    assert await store.outbox.void_reason(item) == "the item is already done"
    async with store.read() as tx:
        row = await tx.fetchone("SELECT result FROM outbox WHERE id = ?", item.id)
    assert row is not None and json.loads(row["result"]) == {"result": "sms_submitted", "reference": 7}
    assert await store.outbox.claim() == [], "a finished item is never handed out again"
