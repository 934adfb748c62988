"""The host interface: store hooks run in their declared order, and the bridge is a host."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import make_config, running_bridge

from alarm_centre.host import HookOrder
from alarm_centre.store import open_store
from bridge.features import FEATURES
from devices.events import DeviceEvent
from devices.vocabulary import EventType


def event(device_id: str, kind: str) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        event_id=uuid.uuid4().hex[:16],
        type=EventType(kind),
        received_at=datetime.now(UTC),
    )


async def test_hooks_run_by_order_not_by_when_they_were_added(tmp_path: Path) -> None:
    raised: list[str] = []
    stored: list[str] = []

    def hook(into: list[str], name: str) -> Any:
        async def run(*_: object) -> None:
            into.append(name)

        return run

    async with open_store(f"sqlite:///{tmp_path / 'hooks.db'}") as store:
        flood_raise, escalation_raise = hook(raised, "floods"), hook(raised, "escalation")
        store.add_raise_hook(flood_raise, HookOrder.FLOODS)
        store.add_raise_hook(escalation_raise, HookOrder.ESCALATION)
        store.add_raise_hook(escalation_raise, HookOrder.ESCALATION)  # a second add is a no-op
        store.add_event_hook(hook(stored, "floods"), HookOrder.FLOODS)
        store.add_event_hook(hook(stored, "registry"), HookOrder.REGISTRY)
        [result] = await store.ingest([event("unit-1", "pendant")])
        assert result.result == "accepted"
    assert raised == ["escalation", "floods"]
    assert stored == ["registry", "floods"]


async def test_every_feature_starts_through_the_host(tmp_path: Path) -> None:
    """A bridge with every feature on starts, and its features added their hooks in the declared order."""
    upstream = [{"url": "tcp://127.0.0.1:9", "account": "C0FFEE", "link_test_s": 3600}]
    config = make_config(
        tmp_path,
        TELECARE_ESCALATION__ENABLED="true",
        TELECARE_FLOODS__ENABLED="true",
        TELECARE_DC09__LISTEN="127.0.0.1:0",
        TELECARE_DC09__FORWARD=json.dumps(upstream),
        TELECARE_SCAIP__LISTEN="127.0.0.1:0",
    )
    async with running_bridge(config) as running:
        store = running.bridge.store
        owners = [getattr(h, "__self__", None).__class__.__name__ for h in store.raise_hooks]
        assert owners == ["Escalation", "FloodGrouper", "ForwardHooks"]
        event_owners = [getattr(h, "__self__", None).__class__.__name__ for h in store.event_hooks]
        assert event_owners == ["Registry", "FloodGrouper", "ForwardHooks"]
    assert [f.__module__ for f in FEATURES] == [
        "bridge.feature_voice",
        "bridge.feature_console",
        "bridge.feature_serial",
        "bridge.feature_registry",
        "bridge.feature_escalation",
        "bridge.feature_telephony",
        "bridge.feature_floods",
        "bridge.feature_dc09",
        "bridge.feature_scaip",
        "bridge.feature_privacy",
    ]
