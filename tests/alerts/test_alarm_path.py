"""The alarm path over MQTT, end to end on real brokers: pendant -> stored alert -> ack -> call back ->
operator handles it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
from harness import RunningBridge, eventually

from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.mosquitto


def unit_for(bridge: RunningBridge, device_id: str, **kw: Any) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id,
        host=host,
        port=port,
        topic_root=bridge.bridge.config.topic_root,
        retry_initial_s=kw.pop("retry_initial_s", 0.5),
        **kw,
    )


async def timeline_actions(bridge: RunningBridge, alert_id: str) -> list[str]:
    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200, body
    return [entry["action"] for entry in body["timeline"]]


async def test_pendant_is_stored_acked_and_called_back(bridge: RunningBridge) -> None:
    await bridge.store.devices.upsert_resident("res-1", "Ada")
    await bridge.store.devices.upsert_device("unit-1", "gsm_unit", resident_id="res-1")
    async with unit_for(bridge, "unit-1") as unit:
        ack = await unit.send("pendant", event_id="ev-1", timeout=20)
        assert ack["result"] == "accepted"
        alert_id = ack["alert_id"]
        # Stored before the ack: the event and its alert are in the store now.
        alert, timeline = await bridge.store.get_alert(alert_id)
        assert (alert.device_id, alert.resident_id, alert.type, alert.priority) == (
            "unit-1",
            "res-1",
            "pendant",
            1,
        )
        assert alert.state == "raised" and not alert.unregistered
        # The call-back goes out from the outbox, and the unit's answers land on the timeline.
        command = await unit.wait_command("call_centre", timeout=20)
        assert command["args"]["alert_id"] == alert_id

        async def answered() -> bool:
            actions = await timeline_actions(bridge, alert_id)
            return "cmd_result" in actions and "call_connected" in actions

        await eventually(answered)
        actions = await timeline_actions(bridge, alert_id)
        assert actions[0] == "raised"
        assert actions.index("command_sent") < actions.index("cmd_result")


async def test_replay_is_duplicate_with_same_alert(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-2", answer_commands=False) as unit:
        first = await unit.send("pendant", event_id="same-id", timeout=20)
        again = await unit.send("pendant", event_id="same-id", timeout=20)
        assert first["result"] == "accepted"
        assert again == {**first, "result": "duplicate"}
    assert await bridge.store.event_count() == 1


async def test_second_help_event_joins_the_open_alert(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-3", answer_commands=False) as unit:
        first = await unit.send("pendant", timeout=20)
        second = await unit.send("fall", timeout=20)
        assert second["result"] == "accepted"
        assert second["alert_id"] == first["alert_id"]
        technical = await unit.send("low_battery", timeout=20)
        assert technical["alert_id"] != first["alert_id"]
    alert, timeline = await bridge.store.get_alert(first["alert_id"])
    assert alert.repeat_count == 1
    repeat = [t for t in timeline if t.action == "repeat"]
    assert repeat and repeat[0].detail["type"] == "fall"


async def test_operators_list_acknowledge_and_resolve(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-4", answer_commands=False) as unit:
        battery = await unit.send("low_battery", timeout=20)
        pendant = await unit.send("pendant", timeout=20)
    status, body = await bridge.call("GET", "/api/v1/alerts?state=open")
    assert status == 200
    ids = [a["id"] for a in body["alerts"]]
    assert ids.index(pendant["alert_id"]) < ids.index(battery["alert_id"]), "priority 1 comes first"
    listed = body["alerts"][ids.index(pendant["alert_id"])]
    for key in (
        "id",
        "device_id",
        "resident_id",
        "type",
        "priority",
        "state",
        "raised_at",
        "acknowledged_by",
        "outcome",
        "repeat_count",
        "test",
        "unregistered",
    ):
        assert key in listed

    alert_id = pendant["alert_id"]
    status, body = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
    assert status == 200 and body["state"] == "acknowledged" and body["acknowledged_by"] == "alice"
    status, body = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="bob")
    assert status == 409 and body["detail"]["holder"] == "alice"
    status, body = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/resolve", user="bob", json={"outcome": "resident_ok"}
    )
    assert status == 409, "only the holder resolves"
    status, body = await bridge.call(
        "POST",
        f"/api/v1/alerts/{alert_id}/resolve",
        user="alice",
        json={"outcome": "resident_ok", "note": "spoke to her, all fine"},
    )
    assert status == 200 and body["state"] == "resolved" and body["outcome"] == "resident_ok"

    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    trail = [(t["action"], t["actor"], t["source"]) for t in body["timeline"]]
    assert trail[0] == ("raised", "device:unit-4", "device")
    assert ("acknowledged", "alice", "api") in trail
    assert ("resolved", "alice", "api") in trail
    status, body = await bridge.call("GET", "/api/v1/alerts?state=open")
    assert alert_id not in [a["id"] for a in body["alerts"]]
    status, body = await bridge.call("GET", "/api/v1/alerts?state=resolved")
    assert alert_id in [a["id"] for a in body["alerts"]]


async def test_unit_retries_until_the_bridge_is_there(
    tmp_path: Any, mosquitto: tuple[str, int], topic_root: str
) -> None:
    from harness import make_config, running_bridge

    host, port = mosquitto
    async with SimulatedUnit(
        "unit-early", host=host, port=port, topic_root=topic_root, retry_initial_s=0.3, retry_max_s=1.0
    ) as unit:
        sending = asyncio.create_task(unit.send("pendant", event_id="early", timeout=60))

        async def retried() -> bool:
            return unit.log.attempts.get("early", 0) >= 2

        await eventually(retried)  # retrying with nobody there to ack
        assert not sending.done(), "nobody can have acked it yet"
        async with running_bridge(
            make_config(tmp_path, mqtt_url=f"mqtt://{host}:{port}", topic_root=topic_root)
        ) as running:
            ack = await sending
            assert ack["result"] == "accepted"
            assert unit.log.attempts["early"] >= 2
            assert await running.store.event_count() == 1


async def test_embedded_broker_carries_the_same_path(embedded_bridge: RunningBridge) -> None:
    login = await embedded_bridge.unit_login("unit-emb")
    async with unit_for(embedded_bridge, "unit-emb", **login) as unit:
        ack = await unit.send("pendant", timeout=20)
        assert ack["result"] == "accepted"
        command = await unit.wait_command("call_centre", timeout=20)
        assert command["args"]["alert_id"] == ack["alert_id"]
        duplicate = await unit.send("pendant", event_id=next(iter(unit.log.attempts)), timeout=20)
        assert duplicate["result"] == "duplicate"


async def test_mains_restored_resolves_mains_fail_and_heartbeat_raises_nothing(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-5", answer_commands=False) as unit:
        beat = await unit.send("heartbeat", timeout=20)
        assert beat["result"] == "accepted" and "alert_id" not in beat
        fail = await unit.send("mains_fail", timeout=20)
        restored = await unit.send("mains_restored", timeout=20)
    assert restored["alert_id"] == fail["alert_id"]
    alert, timeline = await bridge.store.get_alert(fail["alert_id"])
    assert alert.state == "resolved" and alert.outcome == "cleared_by_device"
    assert timeline[-1].actor == "device:unit-5"


@pytest.mark.parametrize(
    ("event_type", "data"),
    [("unknown_signal", {"protocol": "dc09", "code": "1999"}), ("restored", {"restores": "mains_fail"})],
)
async def test_a_unit_cannot_send_the_types_only_the_bridges_receivers_make(
    bridge: RunningBridge, event_type: str, data: dict[str, Any]
) -> None:
    async with unit_for(bridge, "unit-bo", answer_commands=False) as unit:
        fail = await unit.send("mains_fail", timeout=20)
        forged = await unit.send(event_type, data=data, timeout=20)
    assert forged["result"] == "rejected" and "raised by the bridge" in forged["error"]
    alert, _ = await bridge.store.get_alert(fail["alert_id"])
    assert alert.state == "raised"  # the forged restore cleared nothing
    alerts, _ = await bridge.store.alerts.list_alerts(state="all")
    assert [a.type for a in alerts if a.device_id == "unit-bo"] == ["mains_fail"]


async def test_will_message_marks_unit_offline(bridge: RunningBridge) -> None:
    import aiomqtt

    await bridge.store.devices.upsert_device("unit-6", "gsm_unit")
    host, port = bridge.broker
    topics = bridge.bridge.config.topic_root

    async def online() -> Any:
        async with bridge.store.read() as tx:
            row = await tx.fetchone("SELECT online FROM devices WHERE id = ?", "unit-6")
        return row["online"] if row else None

    client = aiomqtt.Client(
        host,
        port,
        identifier="unit-6-will",
        will=aiomqtt.Will(f"{topics}/v1/unit-6/status", b"offline", qos=1),
    )
    await client.__aenter__()
    await client.publish(f"{topics}/v1/unit-6/status", b"online", qos=1)
    await eventually(lambda: _eq(online(), 1))
    # Drop the TCP connection without DISCONNECT: the broker publishes the will. Shut the socket down
    # rather than close it, so its descriptor is not reused (say by a database connection) while paho
    # still watches it.
    client._client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    await eventually(lambda: _eq(online(), 0), timeout=60)
    with contextlib.suppress(Exception):
        await client.__aexit__(None, None, None)


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
