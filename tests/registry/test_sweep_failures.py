"""The registry's sweeps never fail silently: a failure is logged with its traceback, counted on
/metrics, and the sweep keeps going (faults injected into a real registry on a real store)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import RunningBridge
from prometheus_client import CollectorRegistry

from alarm_centre.alerts.intake import GroupCommitter
from alarm_centre.registry.service import Registry
from alarm_centre.registry.supervision import CommissioningTimeouts, HeartbeatSupervisor, SweepFailures
from alarm_centre.store import open_store
from devices.registry import Device

SWEEP_FAILURES = "telecare_registry_sweep_failures_total"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Registry, GroupCommitter, Clock]]:
    clock = Clock()
    async with open_store(str(tmp_path / "s.db")) as store, GroupCommitter(store) as intake:
        registry = Registry(store, clock=clock)
        registry.install()
        yield registry, intake, clock


def failing(times: int, real: object, calls: list[int], enough: asyncio.Event, wanted: int) -> object:
    """Raise on the first ``times`` calls, then call ``real``; set ``enough`` after ``wanted`` calls."""

    async def fake(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) >= wanted:
            enough.set()
        if len(calls) <= times:
            raise RuntimeError("database went away")
        return await real(*args, **kwargs)  # type: ignore[operator]

    return fake


def traced(caplog: pytest.LogCaptureFixture, words: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if words in r.getMessage() and r.exc_info is not None]


async def test_a_failing_visit_sweep_inside_the_heartbeat_sweep_is_counted(
    parts: tuple[Registry, GroupCommitter, Clock],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, intake, clock = parts
    metrics = CollectorRegistry()
    unit = Device(id="u1", kind="gsm_unit", heartbeat_interval_s=60, heartbeat_grace_s=0)
    await registry.create_device(unit, actor="ian", source="api")
    calls: list[int] = []
    monkeypatch.setattr(
        registry, "expire_visits", failing(1, registry.expire_visits, calls, asyncio.Event(), 1)
    )
    supervisor = HeartbeatSupervisor(registry, intake, clock=clock, failures=SweepFailures(metrics))
    clock.now += 61
    assert await supervisor.sweep() == 1  # the late unit is still raised
    assert metrics.get_sample_value(SWEEP_FAILURES, {"sweep": "commissioning_timeouts"}) == 1
    assert metrics.get_sample_value(SWEEP_FAILURES, {"sweep": "heartbeats"}) == 0
    assert traced(caplog, "commissioning visits failed")
    assert await supervisor.sweep() == 0  # and the next sweep runs the visit sweep again, fine this time
    assert len(calls) == 2 and supervisor.failures.counts == {"commissioning_timeouts": 1}


async def test_commissioning_timeouts_keep_going_after_failures(
    parts: tuple[Registry, GroupCommitter, Clock],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, _, clock = parts
    metrics = CollectorRegistry()
    await registry.create_device(Device(id="u1", kind="gsm_unit"), actor="ian", source="api")
    await registry.start_visit("u1", installer="ian", minutes=1)
    clock.now += 61
    calls: list[int] = []
    third = asyncio.Event()
    monkeypatch.setattr(registry, "expire_visits", failing(2, registry.expire_visits, calls, third, 3))
    loop = CommissioningTimeouts(registry, check_every_s=0, failures=SweepFailures(metrics))
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(30):
            await third.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert metrics.get_sample_value(SWEEP_FAILURES, {"sweep": "commissioning_timeouts"}) == 2
    # two failures in a row are one fault: its traceback once, when it starts
    assert len(traced(caplog, "commissioning visits failed")) == 1
    assert (await registry.visit("u1"))["finish_reason"] == "timed out"  # the third pass closed it


async def test_a_failing_heartbeat_sweep_is_counted_and_retried(
    parts: tuple[Registry, GroupCommitter, Clock],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, intake, clock = parts
    metrics = CollectorRegistry()
    calls: list[int] = []
    second = asyncio.Event()
    monkeypatch.setattr(registry, "due_heartbeats", failing(1, registry.due_heartbeats, calls, second, 2))
    supervisor = HeartbeatSupervisor(
        registry, intake, clock=clock, check_every_s=0, failures=SweepFailures(metrics)
    )
    task = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(30):
            await second.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert metrics.get_sample_value(SWEEP_FAILURES, {"sweep": "heartbeats"}) == 1
    assert traced(caplog, "heartbeat sweep failed")


async def test_metrics_show_the_sweep_failure_counters(embedded_bridge: RunningBridge) -> None:
    status, text = await embedded_bridge.call("GET", "/metrics", user=None)
    assert status == 200
    for sweep in ("heartbeats", "commissioning_timeouts"):
        assert f'{SWEEP_FAILURES}{{sweep="{sweep}"}} 0.0' in text
    assert "telecare_voice_check_in_sweep_failures_total 0.0" in text
