"""Heartbeat supervision: one indexed query per sweep, no_heartbeat raised once, resolved when heard again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import RunningBridge, eventually

from alarm_centre.alerts.intake import GroupCommitter
from alarm_centre.alerts.model import iso
from alarm_centre.registry.service import Registry
from alarm_centre.registry.supervision import HeartbeatSupervisor
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from devices.events import DeviceEvent
from devices.registry import Device
from devices.vocabulary import EventType
from simulators.unit import SimulatedUnit


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[AlertStore, Registry, GroupCommitter, Clock]]:
    clock = Clock()
    async with open_store(str(tmp_path / "s.db")) as store, GroupCommitter(store) as intake:
        registry = Registry(store, default_interval_s=900, default_grace_s=120, clock=clock)
        registry.install()
        yield store, registry, intake, clock


def heartbeat(device_id: str, at: float, n: int = 0) -> DeviceEvent:
    return DeviceEvent(device_id, f"hb-{at}-{n}", EventType.HEARTBEAT, datetime.fromtimestamp(at, UTC))


async def open_no_heartbeat(store: AlertStore) -> list[str]:
    async with store.read() as tx:
        rows = await tx.fetchall(
            "SELECT device_id FROM alerts WHERE type = 'no_heartbeat' AND state = 'raised' ORDER BY device_id"
        )
    return [r["device_id"] for r in rows]


async def test_raised_once_and_resolved_when_heard(
    parts: tuple[AlertStore, Registry, GroupCommitter, Clock],
) -> None:
    store, registry, intake, clock = parts
    await registry.create_device(
        Device(id="u1", kind="gsm_unit", heartbeat_interval_s=60, heartbeat_grace_s=30),
        actor="ian",
        source="api",
    )
    t0 = clock.now
    supervisor = HeartbeatSupervisor(registry, intake, clock=clock)
    clock.now = t0 + 89
    assert await supervisor.sweep() == 0
    clock.now = t0 + 91
    assert await supervisor.sweep() == 1
    assert await open_no_heartbeat(store) == ["u1"]
    alerts, _ = await store.alerts.list_alerts(state="open")
    assert alerts[0].priority == 2 and alerts[0].data["source"] == "system"
    device = await registry.get_device("u1")
    assert device["heartbeat_due_at"] is None and device["last_seen_at"] is None and not device["online"]
    for later in (200, 5000):  # once, however long the silence
        clock.now = t0 + later
        assert await supervisor.sweep() == 0
    # The unit is heard again: the core resolves the alert; supervision is armed again.
    assert (await intake.submit(heartbeat("u1", t0 + 6000))).result == "accepted"
    assert await open_no_heartbeat(store) == []
    _, timeline = await store.get_alert(alerts[0].id)
    assert timeline[-1].detail["reason"] == "heartbeat resumed"
    device = await registry.get_device("u1")
    assert device["heartbeat_due_at"] == iso(t0 + 6000 + 60 + 30)
    clock.now = t0 + 6000 + 91
    assert await supervisor.sweep() == 1
    async with store.read() as tx:
        row = await tx.fetchone("SELECT COUNT(*) AS n FROM alerts WHERE type = 'no_heartbeat'")
    assert row["n"] == 2


async def test_only_silent_units_are_raised(
    parts: tuple[AlertStore, Registry, GroupCommitter, Clock],
) -> None:
    store, registry, intake, clock = parts
    t0 = clock.now
    for n in range(300):
        await registry.create_device(
            Device(id=f"u{n:03d}", kind="ip_unit", heartbeat_interval_s=60, heartbeat_grace_s=0),
            actor="ian",
            source="api",
        )
    await registry.create_device(Device(id="echo", kind="alexa"), actor="ian", source="api")
    silent = {f"u{n:03d}" for n in range(0, 300, 37)}
    for n in range(300):
        if f"u{n:03d}" not in silent:
            await intake.submit(heartbeat(f"u{n:03d}", t0 + 50))
    clock.now = t0 + 61
    supervisor = HeartbeatSupervisor(registry, intake, clock=clock, batch=3)  # several queries per sweep
    assert await supervisor.sweep() == len(silent)
    assert set(await open_no_heartbeat(store)) == silent


async def test_a_heartbeat_that_wins_the_race_voids_the_alarm(
    parts: tuple[AlertStore, Registry, GroupCommitter, Clock],
) -> None:
    store, registry, intake, clock = parts
    await registry.create_device(
        Device(id="u1", kind="gsm_unit", heartbeat_interval_s=60, heartbeat_grace_s=0),
        actor="ian",
        source="api",
    )
    clock.now += 61
    late = await registry.due_heartbeats(clock.now, 10)
    assert [r["id"] for r in late] == ["u1"]
    await intake.submit(heartbeat("u1", clock.now))  # lands between the sweep's query and its event
    result = await intake.submit(
        DeviceEvent(
            "u1",
            "nohb-x",
            EventType.NO_HEARTBEAT,
            datetime.fromtimestamp(clock.now, UTC),
            source="system",
            data={"due_at": float(late[0]["heartbeat_due_at"])},
        )
    )
    assert result.alert_id is not None
    alert, _ = await store.get_alert(result.alert_id)
    assert alert.state.value == "resolved" and alert.outcome == "cleared_by_device"
    assert (await registry.get_device("u1"))["heartbeat_due_at"] is not None


async def test_sweeps_use_the_index(parts: tuple[AlertStore, Registry, GroupCommitter, Clock]) -> None:
    store, *_ = parts
    async with store.read() as tx:
        plan = await tx.fetchall(
            "EXPLAIN QUERY PLAN SELECT id, heartbeat_due_at, last_seen_at FROM devices "
            "WHERE heartbeat_due_at <= ? ORDER BY heartbeat_due_at LIMIT ?",
            time.time(),
            10,
        )
    assert any("devices_heartbeat_due" in str(dict(r)) for r in plan)


async def test_supervised_unit_over_mosquitto(bridge: RunningBridge, topic_root: str) -> None:
    b = bridge
    assert (
        await b.call(
            "POST",
            "/api/v1/devices",
            user="ian",
            role="installer",
            json={"id": "unit-h", "kind": "gsm_unit", "heartbeat_interval_s": 60},
        )
    )[0] == 201
    host, port = b.broker
    async with SimulatedUnit("unit-h", host=host, port=port, topic_root=topic_root) as unit:
        await unit.send("heartbeat", timeout=15)

        # Compress time: the unit's deadline passes now.
        async def overdue(tx: object, post: object) -> None:
            await tx.execute(
                "UPDATE devices SET heartbeat_due_at = ? WHERE id = 'unit-h'",  # type: ignore[attr-defined]
                time.time() - 1,
            )

        await b.store.transaction(overdue)

        async def raised() -> bool:
            return await open_no_heartbeat(b.store) == ["unit-h"]

        await eventually(raised)  # by the bridge's own supervision loop
        await unit.send("heartbeat", timeout=15)
        assert await open_no_heartbeat(b.store) == []
        status, device = await b.call("GET", "/api/v1/devices/unit-h", user="olive", role="operator")
        assert device["online"] and device["heartbeat_due_at"] is not None


async def test_serial_and_sms_units_need_their_own_interval(
    parts: tuple[AlertStore, Registry, GroupCommitter, Clock],
) -> None:
    store, registry, intake, clock = parts
    await registry.create_device(
        Device(id="s1", kind="serial_unit", channel="serial"), actor="i", source="api"
    )
    await registry.create_device(
        Device(id="s2", kind="gsm_unit", channel="sms", heartbeat_interval_s=86400, heartbeat_grace_s=3600),
        actor="i",
        source="api",
    )
    assert (await registry.get_device("s1"))[
        "heartbeat_due_at"
    ] is None  # a daily test call is not a heartbeat
    await intake.submit(heartbeat("s1", clock.now))
    clock.now += 90000
    supervisor = HeartbeatSupervisor(registry, intake, clock=clock)
    assert await supervisor.sweep() == 1
    assert await open_no_heartbeat(store) == ["s2"]
