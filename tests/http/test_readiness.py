"""/healthz follows what the bridge can do (issue 17): 503 as soon as a batch of events cannot commit,
even while a one-row probe still could (a nearly full disk); 200 once one commits and none has failed
for half a second (so readiness does not flicker with a disk where some batches fit); with no events
arriving, a probe write decides again."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from harness import RunningBridge, eventually, unit_for

from bridge import service

pytestmark = pytest.mark.mosquitto


async def test_healthz_follows_the_batches_not_the_probe(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bridge.store
    real = store.ingest
    broken = True

    async def full_for_batches(events: Any) -> Any:  # the fault: batches fail, the probe still fits
        if broken:
            raise sqlite3.OperationalError("database or disk is full (injected)")
        return await real(events)

    monkeypatch.setattr(store, "ingest", full_for_batches)
    status, body = await bridge.call("GET", "/healthz", user=None)
    assert status == 200, body  # no batch has failed yet: the probe answers
    async with unit_for(bridge, "unit-full") as unit:
        sending = asyncio.create_task(unit.send("pendant", event_id="ev-1", timeout=30))

        async def batch_failed() -> bool:
            return bridge.bridge.intake.fault.active

        await eventually(batch_failed)
        status, body = await bridge.call("GET", "/healthz", user=None)
        assert status == 503
        assert any("store does not accept writes: store cannot commit events" in p for p in body["problems"])
        assert any("database or disk is full" in p for p in body["problems"])
        broken = False
        ack = await sending  # the unit's retry commits
        assert ack["result"] == "accepted"

    async def ready() -> bool:  # once the last failure is FLICKER_HOLD_S old (0.5 s)
        status, _ = await bridge.call("GET", "/healthz", user=None)
        return status == 200

    await eventually(ready, timeout=5)


async def test_with_no_events_a_probe_decides_again(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "BATCH_VERDICT_S", 0.2)
    intake = bridge.bridge.intake
    intake.fault.failed(sqlite3.OperationalError("database or disk is full (injected)"), 50)
    status, _ = await bridge.call("GET", "/healthz", user=None)
    assert status == 503

    async def probe_decides() -> bool:  # no batch failed for BATCH_VERDICT_S: the probe write answers
        status, _ = await bridge.call("GET", "/healthz", user=None)
        return status == 200

    await eventually(probe_decides)
    assert intake.fault.active  # the log still says so until a batch commits


async def test_a_failing_probe_is_a_503_with_its_reason(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing() -> None:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(bridge.store, "probe_write", failing)
    monkeypatch.setattr(bridge.bridge, "_store_ok_at", 0.0)
    intake = bridge.bridge.intake
    monkeypatch.setattr(intake, "last_commit_at", None)
    status, body = await bridge.call("GET", "/healthz", user=None)
    assert status == 503
    assert "store does not accept writes: OperationalError: disk I/O error (injected)" in body["problems"]
