"""Bad input over the real broker: each gets a clear answer, and the bridge keeps serving."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from harness import RunningBridge, eventually, make_config, running_bridge

from alarm_centre.store.sqlite import SqliteStore
from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.mosquitto


def unit_for(bridge: RunningBridge, device_id: str) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id,
        host=host,
        port=port,
        topic_root=bridge.bridge.config.topic_root,
        retry_initial_s=0.3,
        retry_max_s=1.0,
        answer_commands=False,
    )


@pytest.mark.parametrize(
    ("raw", "event_id", "reason"),
    [
        (b"{not json", None, "not JSON"),
        (b'["pendant"]', None, "JSON object"),
        (
            json.dumps({"event_id": "big", "type": "pendant", "data": {"x": "y" * 5000}}).encode(),
            None,
            "limit is 4096",
        ),
        (json.dumps({"type": "pendant"}).encode(), None, "event_id"),
        (json.dumps({"event_id": "x" * 65, "type": "pendant"}).encode(), None, "event_id"),
        (json.dumps({"event_id": "unk", "type": "alien_abduction"}).encode(), "unk", "unknown event type"),
    ],
)
async def test_malformed_events_are_rejected_and_counted(
    bridge: RunningBridge, raw: bytes, event_id: str | None, reason: str
) -> None:
    async with unit_for(bridge, "unit-bad") as unit:
        await unit.publish_raw(raw)
        ack = await unit.next_ack(event_id)  # type: ignore[arg-type]
        assert ack["result"] == "rejected"
        assert reason in ack["error"]
        # ...and the bridge still serves the next good event.
        good = await unit.send("pendant", timeout=20)
        assert good["result"] == "accepted"
    assert await bridge.store.event_count() == 1
    status, metrics = await bridge.call("GET", "/metrics", user=None)
    assert 'telecare_events_received_total{result="rejected",transport="mqtt",type="invalid"} 1.0' in metrics


async def test_bad_device_id_in_topic_is_ignored_and_counted(bridge: RunningBridge) -> None:
    host, port = bridge.broker
    root = bridge.bridge.config.topic_root
    bad_id = "x" * 65
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{root}/v1/+/ack", qos=1)
        await client.publish(f"{root}/v1/{bad_id}/event", b'{"event_id":"e","type":"pendant"}', qos=1)

        async def counted() -> bool:
            _, metrics = await bridge.call("GET", "/metrics", user=None)
            return 'telecare_events_rejected_reasons_total{reason="topic",transport="mqtt"} 1.0' in metrics

        await eventually(counted)
    assert await bridge.store.event_count() == 0


async def test_far_past_timestamp_is_stored_and_flagged(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-clock") as unit:
        old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
        await unit.publish_raw(json.dumps({"event_id": "old", "type": "fall", "ts": old}).encode())
        ack = await unit.next_ack("old")
    assert ack["result"] == "accepted"
    alert, _ = await bridge.store.get_alert(ack["alert_id"])
    assert alert.clock_skew
    assert alert.data["clock_skew_s"] < -400 * 86400 + 60
    assert abs(alert.raised_at - datetime.now(UTC).timestamp()) < 60, "raised at our time, not the unit's"


async def test_unregistered_unit_still_raises_a_flagged_alert(bridge: RunningBridge) -> None:
    await bridge.store.devices.upsert_device("unit-known", "gsm_unit")
    async with unit_for(bridge, "unit-stranger") as stranger, unit_for(bridge, "unit-known") as known:
        a = await stranger.send("pendant", timeout=20)
        b = await known.send("pendant", timeout=20)
        tech = await stranger.send("low_battery", timeout=20)
    assert (await bridge.store.get_alert(a["alert_id"]))[0].unregistered
    assert not (await bridge.store.get_alert(b["alert_id"]))[0].unregistered
    assert (await bridge.store.get_alert(tech["alert_id"]))[0].unregistered


async def test_test_flag_is_honoured_only_in_test_mode(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-t") as unit:
        ack = await unit.send("pendant", test=True, timeout=20)
    alert, _ = await bridge.store.get_alert(ack["alert_id"])
    assert not alert.test, "a unit not in test mode cannot downgrade an emergency"
    assert "test_flag_ignored" in alert.data


async def test_store_unwritable_means_no_ack_until_it_recovers(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = SqliteStore._commit
    broken = True

    def failing_commit(self: SqliteStore, conn: sqlite3.Connection) -> None:
        if broken:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        real_commit(self, conn)

    monkeypatch.setattr(SqliteStore, "_commit", failing_commit)
    async with unit_for(bridge, "unit-disk") as unit:
        sending = asyncio.create_task(unit.send("pendant", event_id="while-broken", timeout=60))
        await eventually(lambda: _attempted(unit, "while-broken", 2))
        assert not sending.done(), "no ack may be sent while the store cannot commit"
        status, body = await bridge.call("GET", "/healthz", user=None)
        assert status == 503 and "store does not accept writes" in json.dumps(body)
        broken = False
        ack = await sending
        assert ack["result"] == "accepted"

    async def ready() -> bool:  # 200 once a batch committed and none failed for FLICKER_HOLD_S
        status, _ = await bridge.call("GET", "/healthz", user=None)
        return status == 200

    await eventually(ready, timeout=5)
    assert await bridge.store.event_count() == 1


async def _attempted(unit: SimulatedUnit, event_id: str, times: int) -> bool:
    return unit.log.attempts.get(event_id, 0) >= times


async def test_broker_restart_loses_nothing(tmp_path: Path, private_mosquitto: object) -> None:
    broker = private_mosquitto
    port = broker.port  # type: ignore[attr-defined]
    config = make_config(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{port}", TELECARE_MQTT__RECONNECT_MAX_S="1")
    async with running_bridge(config) as running:
        async with SimulatedUnit(
            "unit-r", port=port, retry_initial_s=0.3, retry_max_s=1.0, answer_commands=False
        ) as unit:
            first = await unit.send("pendant", timeout=20)
            broker.stop()  # type: ignore[attr-defined]
            status, body = await running.call("GET", "/healthz", user=None)
            assert status == 503 and "not subscribed" in json.dumps(body)
            during = asyncio.create_task(unit.send("fall", event_id="during-outage", timeout=60))
            await asyncio.sleep(1.0)
            broker.start()  # type: ignore[attr-defined]
            ack = await during
            assert ack["result"] == "accepted" and ack["alert_id"] == first["alert_id"]
        await running.bridge.mqtt.wait_subscribed(20)
        status, _ = await running.call("GET", "/healthz", user=None)
        assert status == 200
        assert running.bridge.mqtt.connections >= 2
        assert await running.store.event_count() == 2
