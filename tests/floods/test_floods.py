"""Alarm floods: many units' technical alarms grouped into one incident; help never grouped away.

Store-level tests run on SQLite and on PostgreSQL (``store_url``); the API test runs a real bridge.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from harness import make_config, running_bridge

from alarm_centre.floods.grouping import FloodGrouper
from alarm_centre.floods.model import FloodRules
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from bridge.config import ConfigError, load_config
from devices.events import DeviceEvent
from devices.vocabulary import EventType, restored_data


def event(device_id: str, kind: str, *, at: float | None = None) -> DeviceEvent:
    received = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
    return DeviceEvent(
        device_id=device_id, event_id=uuid.uuid4().hex[:16], type=EventType(kind), received_at=received
    )


@pytest.fixture
async def grouped_store(store_url: str) -> AsyncIterator[tuple[AlertStore, FloodGrouper]]:
    async with open_store(store_url) as store:
        grouper = FloodGrouper(store, FloodRules(threshold=5, window_s=60.0))
        grouper.install()
        yield store, grouper


async def test_flood_becomes_one_incident_and_fall_stays_on_top(
    grouped_store: tuple[AlertStore, FloodGrouper],
) -> None:
    store, grouper = grouped_store
    # Four arrive in one batch, then the flood goes on; a fall lands in the middle of it.
    first = await store.ingest([event(f"u{n}", "mains_fail") for n in range(4)])
    assert all(r.result == "accepted" for r in first)
    assert await grouper.list_incidents() == [], "below the threshold nothing is grouped"
    rest = await store.ingest(
        [event(f"u{n}", "mains_fail") for n in range(4, 8)]
        + [event("u-fall", "fall")]
        + [event(f"u{n}", "mains_fail") for n in range(8, 12)]
    )
    fall_id = rest[4].alert_id
    assert fall_id is not None

    incidents = await grouper.list_incidents()
    assert len(incidents) == 1
    incident = incidents[0]
    assert (incident.type, incident.count, incident.open_count) == ("mains_fail", 12, 12)
    assert incident.state == "open"
    assert sorted(incident.units) == sorted(f"u{n}" for n in range(12))
    # Every grouped alert carries the incident; the fall does not.
    for result in first + rest[:4] + rest[5:]:
        alert, timeline = await store.get_alert(str(result.alert_id))
        assert alert.data["incident_id"] == incident.id
        assert timeline[0].action == "raised"
    fall, _ = await store.get_alert(fall_id)
    assert "incident_id" not in fall.data and fall.state == "raised"
    # The queue: the fall first, then the flood as a single line.
    lines = await grouper.queue(limit=50)
    assert [line["kind"] for line in lines] == ["alert", "incident"]
    assert lines[0]["id"] == fall_id and lines[0]["type"] == "fall"
    assert lines[1]["count"] == 12 and lines[1]["id"] == incident.id
    # Every event is still its own stored alert.
    assert await store.event_count() == 13


async def test_help_types_are_never_grouped(grouped_store: tuple[AlertStore, FloodGrouper]) -> None:
    store, grouper = grouped_store
    await store.ingest([event(f"h{n}", "pendant") for n in range(10)])
    await store.ingest([event(f"h{n}", "fall") for n in range(10, 20)])
    assert await grouper.list_incidents(state="all") == []
    lines = await grouper.queue(limit=100)
    assert len(lines) == 20 and {line["kind"] for line in lines} == {"alert"}
    with pytest.raises(ValueError, match="help"):
        FloodRules(types=frozenset({"mains_fail", "fall"}))


async def test_restores_of_a_technical_type_close_the_incident(
    grouped_store: tuple[AlertStore, FloodGrouper],
) -> None:
    store, grouper = grouped_store
    await store.ingest([event(f"b{n}", "low_battery") for n in range(5)])
    [incident] = await grouper.list_incidents()
    restores = [
        DeviceEvent(
            f"b{n}",
            uuid.uuid4().hex[:16],
            EventType.RESTORED,
            datetime.now(UTC),
            data=restored_data(EventType.LOW_BATTERY),
        )
        for n in range(5)
    ]
    assert all(r.alert_id is not None for r in await store.ingest(restores))
    [closed] = await grouper.list_incidents(state="closed")
    assert closed.id == incident.id and closed.closed_reason == "all units reported low_battery restored"


async def test_mains_restored_closes_the_incident(grouped_store: tuple[AlertStore, FloodGrouper]) -> None:
    store, grouper = grouped_store
    await store.ingest([event(f"m{n}", "mains_fail") for n in range(6)])
    [incident] = await grouper.list_incidents()
    assert incident.open_count == 6
    await store.ingest([event(f"m{n}", "mains_restored") for n in range(4)])
    [still] = await grouper.list_incidents()
    assert (still.count, still.open_count, still.state) == (6, 2, "open")
    await store.ingest([event(f"m{n}", "mains_restored") for n in range(4, 6)])
    assert await grouper.list_incidents() == []
    [closed] = await grouper.list_incidents(state="closed")
    assert closed.id == incident.id and closed.open_count == 0
    assert "mains_restored" in (closed.closed_reason or "")
    assert await grouper.queue() == []
    # The next power cut is a new incident, not the old one reopened.
    await store.ingest([event(f"m{n}", "mains_fail") for n in range(6)])
    [again] = await grouper.list_incidents()
    assert again.id != incident.id and again.count == 6


async def test_window_is_respected(grouped_store: tuple[AlertStore, FloodGrouper]) -> None:
    store, grouper = grouped_store
    old = datetime.now(UTC).timestamp() - 600
    await store.ingest([event(f"w{n}", "low_battery", at=old + n) for n in range(4)])
    await store.ingest([event(f"w{n}", "low_battery") for n in range(4, 8)])
    assert await grouper.list_incidents() == [], "4 old + 4 new is not 5 within the window"
    await store.ingest([event("w8", "low_battery")])
    [incident] = await grouper.list_incidents()
    assert incident.count == 5 and "w0" not in incident.units


def test_config_refuses_help_types_and_documents_defaults() -> None:
    with pytest.raises(ConfigError, match=r"floods\.types"):
        load_config(None, environ={"TELECARE_FLOODS__TYPES": "[mains_fail, pendant]"})
    with pytest.raises(ConfigError, match=r"floods\.threshold"):
        load_config(None, environ={"TELECARE_FLOODS__THRESHOLD": "1"})
    config = load_config(None, environ={})
    assert config.floods.enabled and config.floods.threshold == 20 and "mains_fail" in config.floods.types


async def test_incidents_api(tmp_path: Path) -> None:
    config = make_config(tmp_path, TELECARE_FLOODS__THRESHOLD="3")
    async with running_bridge(config) as running:
        for n in range(5):
            await running.bridge.intake.submit(event(f"api{n}", "mains_fail"))
        fall = await running.bridge.intake.submit(event("api-fall", "fall"))
        status, body = await running.call("GET", "/api/v1/queue")
        assert status == 200
        assert [line["kind"] for line in body["lines"]] == ["alert", "incident"]
        assert body["lines"][0]["id"] == fall.alert_id
        status, body = await running.call("GET", "/api/v1/incidents")
        assert status == 200 and len(body["incidents"]) == 1
        incident = body["incidents"][0]
        assert incident["count"] == 5 and incident["type"] == "mains_fail"
        status, detail = await running.call("GET", f"/api/v1/incidents/{incident['id']}")
        assert status == 200 and sorted(detail["units"]) == [f"api{n}" for n in range(5)]
        status, alerts = await running.call("GET", "/api/v1/alerts?state=open")
        grouped = [a for a in alerts["alerts"] if a["data"].get("incident_id") == incident["id"]]
        assert len(grouped) == 5
        assert (await running.call("GET", "/api/v1/incidents/999999"))[0] == 404
        assert (await running.call("GET", "/api/v1/incidents?state=nope"))[0] == 422
        assert (await running.call("GET", "/api/v1/queue?limit=0"))[0] == 422
        assert (await running.call("GET", "/api/v1/queue", user=None))[0] == 401
