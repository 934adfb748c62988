"""The generic restore and unknown signals in the store, on SQLite and PostgreSQL.

A ``restored`` event (``data.restores`` names a type) resolves the unit's open technical alert of that
type; on a call for help or an urgent alert it only adds ``unit_restored`` to the timeline; with nothing
open, or naming no alert type, it is recorded and changes nothing. ``mains_restored`` is the same rule.
Each distinct ``unknown_signal`` code of a unit is an open alert of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from devices.events import DeviceEvent
from devices.vocabulary import EventType, restored_data, unknown_signal_data


def event(device_id: str, kind: EventType, data: dict[str, Any] | None = None) -> DeviceEvent:
    return DeviceEvent(
        device_id, uuid.uuid4().hex[:16], kind, datetime.now(UTC), data=data or {}, source="dc09"
    )


def restore(device_id: str, kind: EventType) -> DeviceEvent:
    return event(device_id, EventType.RESTORED, restored_data(kind))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    async with open_store(store_url) as opened:
        yield opened


async def raise_one(store: AlertStore, ev: DeviceEvent) -> str:
    [result] = await store.ingest([ev])
    assert result.result == "accepted" and result.alert_id is not None
    return result.alert_id


async def test_a_technical_restore_resolves_only_that_units_alert_of_that_type(store: AlertStore) -> None:
    battery = await raise_one(store, event("p1", EventType.LOW_BATTERY))
    tamper = await raise_one(store, event("p1", EventType.TAMPER))
    other = await raise_one(store, event("p2", EventType.LOW_BATTERY))
    [result] = await store.ingest([restore("p1", EventType.LOW_BATTERY)])
    assert (result.result, result.alert_id) == ("accepted", battery)
    alert, timeline = await store.get_alert(battery)
    assert (alert.state, alert.outcome, alert.resolved_by) == ("resolved", "cleared_by_device", "device:p1")
    assert timeline[-1].detail["reason"] == "the unit reports low_battery restored"
    for still_open in (tamper, other):
        assert (await store.get_alert(still_open))[0].state == "raised"


async def test_an_acknowledged_technical_alert_resolves_too(store: AlertStore) -> None:
    fault = await raise_one(store, event("p3", EventType.SENSOR_FAULT))
    await store.acknowledge(fault, actor="olive", source="api")
    await store.ingest([restore("p3", EventType.SENSOR_FAULT)])
    assert (await store.get_alert(fault))[0].state == "resolved"


@pytest.mark.parametrize("kind", [EventType.SMOKE, EventType.PANIC, EventType.FLOOD, EventType.NO_HEARTBEAT])
async def test_a_restore_never_closes_help_or_urgent_alerts(store: AlertStore, kind: EventType) -> None:
    source = "system" if kind is EventType.NO_HEARTBEAT else "dc09"
    raised = await raise_one(store, DeviceEvent("p4", "e1", kind, datetime.now(UTC), source=source))
    [result] = await store.ingest([restore("p4", kind)])
    assert result.alert_id == raised
    alert, timeline = await store.get_alert(raised)
    assert alert.state == "raised" and alert.outcome is None
    entry = timeline[-1]
    assert (entry.action, entry.actor, entry.detail["restores"]) == ("unit_restored", "device:p4", kind.value)


async def test_a_restore_of_help_reaches_the_residents_help_alert(store: AlertStore) -> None:
    await store.devices.upsert_resident("r-ada", "Ada")
    await store.devices.upsert_device("pendant-ada", "gsm_unit", resident_id="r-ada")
    await store.devices.upsert_device("panel-ada", "ip_unit", resident_id="r-ada")
    help_alert = await raise_one(store, event("pendant-ada", EventType.PENDANT))
    await raise_one(store, event("panel-ada", EventType.SMOKE))  # joins the resident's help alert
    [result] = await store.ingest([restore("panel-ada", EventType.SMOKE)])
    assert result.alert_id == help_alert
    alert, timeline = await store.get_alert(help_alert)
    assert alert.state == "raised" and timeline[-1].action == "unit_restored"


@pytest.mark.parametrize(
    "data",
    [{}, {"restores": "heartbeat"}, {"restores": "teleport"}, {"restores": 7}, {"restores": None}],
)
async def test_a_restore_that_names_no_alert_type_is_recorded_and_changes_nothing(
    store: AlertStore, data: dict[str, Any]
) -> None:
    battery = await raise_one(store, event("p5", EventType.LOW_BATTERY))
    [result] = await store.ingest([event("p5", EventType.RESTORED, data)])
    assert (result.result, result.alert_id) == ("accepted", None)
    assert (await store.get_alert(battery))[0].state == "raised"


async def test_a_restore_with_nothing_open_is_recorded_only(store: AlertStore) -> None:
    before = await store.event_count()
    results = await store.ingest([restore("p6", EventType.TAMPER), restore("p6", EventType.SMOKE)])
    assert [(r.result, r.alert_id) for r in results] == [("accepted", None), ("accepted", None)]
    assert await store.event_count() == before + 2
    alerts, _ = await store.alerts.list_alerts(state="all")
    assert [a for a in alerts if a.device_id == "p6"] == []


async def test_mains_restored_is_the_same_rule(store: AlertStore) -> None:
    mains = await raise_one(store, event("p7", EventType.MAINS_FAIL))
    [result] = await store.ingest([event("p7", EventType.MAINS_RESTORED)])
    assert result.alert_id == mains
    alert, timeline = await store.get_alert(mains)
    assert (alert.state, alert.outcome, timeline[-1].detail["reason"]) == (
        "resolved",
        "cleared_by_device",
        "mains_restored",
    )


async def test_each_unknown_code_is_its_own_alert_and_a_repeat_joins_it(store: AlertStore) -> None:
    first = await raise_one(store, event("p8", EventType.UNKNOWN_SIGNAL, unknown_signal_data("dc09", "1999")))
    second = await raise_one(
        store, event("p8", EventType.UNKNOWN_SIGNAL, unknown_signal_data("dc09", "1888"))
    )
    scaip = await raise_one(
        store, event("p8", EventType.UNKNOWN_SIGNAL, unknown_signal_data("scaip", "1999"))
    )
    again = await raise_one(store, event("p8", EventType.UNKNOWN_SIGNAL, unknown_signal_data("dc09", "1999")))
    assert len({first, second, scaip}) == 3 and again == first
    alert, _ = await store.get_alert(first)
    assert (alert.type, alert.priority, alert.repeat_count) == ("unknown_signal", 2, 1)
    assert alert.data["event_data"] == {"protocol": "dc09", "code": "1999"}
    # Data without a code still raises (keyed on the empty code): unknown never means dropped.
    assert await raise_one(store, event("p8", EventType.UNKNOWN_SIGNAL, {})) not in (first, second, scaip)
