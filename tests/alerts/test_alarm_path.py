"""The alarm path over MQTT, end to end on real brokers: pendant -> stored alert -> ack -> call back ->
operator handles it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import RunningBridge, eventually

from alarm_centre.alerts.model import OutboxItem
from alarm_centre.store import open_store
from alarm_centre.store.base import AlertStore
from bridge.outbox import mqtt_payload
from devices.events import DeviceEvent
from devices.vocabulary import EventType
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


async def command_done(bridge: RunningBridge, cmd_id: str | None) -> bool:
    async with bridge.store.read() as tx:
        row = await tx.fetchone("SELECT done_at FROM outbox WHERE cmd_id = ?", cmd_id)
    return row is not None and row["done_at"] is not None


async def test_the_send_is_on_the_timeline_before_the_units_answer_however_late_it_is_recorded(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race, forced: the unit's answer is stored before the bridge gets to record that it sent the
    command (a loaded machine, or another node taking the answer). An operator reads cause before effect."""

    async def send_then_let_the_answer_win(device_id: str, item: OutboxItem) -> None:
        await bridge.bridge.mqtt.send_command(device_id, mqtt_payload(item))
        await eventually(lambda: command_done(bridge, item.cmd_id))  # the fault: the answer is stored first

    recorded = asyncio.Event()
    record_send = bridge.store.outbox.sent

    async def record_then_tell(item: OutboxItem, *, error: str | None = None) -> None:
        await record_send(item, error=error)
        recorded.set()

    bridge.bridge.add_outbox_channel("mqtt", send_then_let_the_answer_win)
    monkeypatch.setattr(bridge.store.outbox, "sent", record_then_tell)
    async with unit_for(bridge, "unit-race") as unit:
        ack = await unit.send("pendant", timeout=20)
        command = await unit.wait_command("call_centre", timeout=20)
        async with asyncio.timeout(20):
            await recorded.wait()  # the bridge has now recorded its send, after the answer
    _, timeline = await bridge.store.get_alert(ack["alert_id"])
    actions = [t.action for t in timeline]
    assert actions.count("command_sent") == 1, actions
    assert "command_failed" not in actions
    assert actions.index("command_sent") < actions.index("cmd_result"), actions
    sent = timeline[actions.index("command_sent")]
    assert (sent.detail["cmd_id"], sent.detail["attempt"]) == (command["cmd_id"], 1)


def answer(device_id: str, cmd_id: str | None) -> DeviceEvent:
    """A unit's ``cmd_result`` for one of its commands."""
    return DeviceEvent(
        device_id=device_id,
        event_id=uuid.uuid4().hex[:16],
        type=EventType.CMD_RESULT,
        received_at=datetime.now(UTC),
        data={"cmd_id": cmd_id, "status": "ok"},
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[AlertStore]:
    """The store alone (no bridge sending its outbox), on each store."""
    async with open_store(store_url) as opened:
        yield opened


async def raise_pendant(store: AlertStore, device_id: str) -> str:
    await store.devices.upsert_device(device_id, "gsm_unit")
    [raised] = await store.ingest(
        [
            DeviceEvent(
                device_id=device_id, event_id="p1", type=EventType.PENDANT, received_at=datetime.now(UTC)
            )
        ]
    )
    assert raised.alert_id is not None
    return raised.alert_id


async def test_an_answer_stored_before_the_send_is_recorded_still_follows_it(store: AlertStore) -> None:
    alert_id = await raise_pendant(store, "unit-a")
    [item] = await store.outbox.claim()
    await store.ingest([answer("unit-a", item.cmd_id)])  # the unit answered first...
    await store.outbox.sent(item)  # ...then the bridge records the send
    await store.outbox.sent(item, error="PUBACK timed out")  # a late transport error changes nothing
    _, timeline = await store.get_alert(alert_id)
    entries = [(t.action, t.detail.get("cmd_id"), t.detail.get("attempt")) for t in timeline]
    assert entries[1:] == [("command_sent", item.cmd_id, 1), ("cmd_result", item.cmd_id, None)]


async def test_a_resend_the_unit_answers_is_on_the_timeline_once_before_the_answer(store: AlertStore) -> None:
    alert_id = await raise_pendant(store, "unit-b")
    [first] = await store.outbox.claim()
    await store.outbox.sent(first)
    [again] = await store.outbox.claim(now=time.time() + 3600)  # no answer: the lease ran out
    await store.ingest([answer("unit-b", again.cmd_id)])
    await store.outbox.sent(again)
    _, timeline = await store.get_alert(alert_id)
    entries = [(t.action, t.detail.get("attempt")) for t in timeline]
    assert entries[1:] == [("command_sent", 1), ("command_sent", 2), ("cmd_result", None)]


async def test_an_answer_to_a_command_never_sent_claims_no_send(store: AlertStore) -> None:
    alert_id = await raise_pendant(store, "unit-c")
    async with store.read() as tx:
        row = await tx.fetchone("SELECT cmd_id FROM outbox WHERE target = ?", "unit-c")
    await store.ingest([answer("unit-c", row["cmd_id"])])  # a unit guessing, or a replay from before
    _, timeline = await store.get_alert(alert_id)
    assert [t.action for t in timeline] == ["raised", "cmd_result"]


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
