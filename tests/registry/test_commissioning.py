"""Commissioning over the real Mosquitto with a simulated unit: test mode, the press-each-peripheral
checklist confirmed as events arrive, the stored visit summary, and test mode ending by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import RunningBridge, eventually, make_config, running_bridge

from simulators.unit import SimulatedUnit

UNIT = {
    "id": "unit-c",
    "kind": "gsm_unit",
    "resident_id": "res-c",
    "peripherals": [
        {"id": "pendant-1", "type": "pendant", "location": "neck"},
        {"id": "smoke-1", "type": "smoke", "location": "hall"},
        {"id": "door-1", "type": "door", "location": "front door"},
    ],
}


@pytest.fixture
async def fast_bridge(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str
) -> AsyncIterator[RunningBridge]:
    host, port = mosquitto
    config = make_config(
        tmp_path,
        mqtt_url=f"mqtt://{host}:{port}",
        topic_root=topic_root,
        TELECARE_HEARTBEATS__CHECK_EVERY_S="0.2",
    )
    async with running_bridge(config) as running:
        assert (
            await running.call(
                "POST",
                "/api/v1/residents",
                user="ian",
                role="installer",
                json={"id": "res-c", "name": "Cora"},
            )
        )[0] == 201
        assert (await running.call("POST", "/api/v1/devices", user="ian", role="installer", json=UNIT))[
            0
        ] == 201
        yield running


async def progress(b: RunningBridge) -> dict[str, object]:
    status, body = await b.call("GET", "/api/v1/commissioning/unit-c", user="ian", role="installer")
    assert status == 200
    return body  # type: ignore[no-any-return]


async def test_visit_checklist_confirms_each_press(fast_bridge: RunningBridge, topic_root: str) -> None:
    b = fast_bridge
    host, port = b.broker
    status, visit = await b.call(
        "POST", "/api/v1/commissioning/unit-c", user="ian", role="installer", json={"minutes": 10}
    )
    assert status == 201 and visit["in_test_mode"] and visit["total"] == 3 and visit["confirmed"] == 0
    assert [i["event"] for i in visit["checklist"]] == ["pendant", "smoke", "door_exit"]
    status, body = await b.call("POST", "/api/v1/commissioning/unit-c", user="ian", role="installer", json={})
    assert status == 409 and "already in test mode" in body["detail"]["message"]
    async with SimulatedUnit(
        "unit-c", host=host, port=port, topic_root=topic_root, call_connects=False
    ) as unit:
        ack = await unit.send("pendant", test=True, data={"peripheral": "pendant-1"}, timeout=20)
        assert ack["result"] == "accepted"
        now = await progress(b)
        assert now["confirmed"] == 1 and now["checklist"][0]["confirmed_at"] is not None
        assert now["checklist"][0]["alert_id"] == ack["alert_id"]
        alert, _ = await b.store.get_alert(ack["alert_id"])
        assert alert.test and alert.priority == 1  # shown as a test, never as an emergency
        ack = await unit.send("smoke", test=True, timeout=20)  # matched by its event type
        now = await progress(b)
        assert now["confirmed"] == 2 and now["checklist"][1]["event_id"] is not None
        assert len(now["events"]) == 2
        # An operator sees these as tests; an installer may read progress, an operator too.
        status, _ = await b.call("GET", "/api/v1/commissioning/unit-c", user="olive", role="operator")
        assert status == 200
        status, visit = await b.call(
            "POST",
            "/api/v1/commissioning/unit-c/finish",
            user="ian",
            role="installer",
            json={"note": "door contact not fitted yet"},
        )
        assert status == 200 and not visit["in_test_mode"] and visit["finish_reason"] == "finished"
        assert visit["summary"]["missing"] == ["door-1"] and not visit["summary"]["passed"]
        assert visit["note"] == "door contact not fitted yet"
        # Test alerts are closed with the outcome "test"; test mode is over.
        alert, timeline = await b.store.get_alert(ack["alert_id"])
        assert alert.outcome == "test" and alert.state.value == "resolved"
        status, device = await b.call("GET", "/api/v1/devices/unit-c", user="ian", role="installer")
        assert device["test_mode_until"] is None
        # After the visit a test-flagged press is handled as real.
        ack = await unit.send("pendant", test=True, timeout=20)
        alert, _ = await b.store.get_alert(ack["alert_id"])
        assert not alert.test and "test_flag_ignored" in alert.data


async def test_test_mode_ends_by_itself(fast_bridge: RunningBridge, topic_root: str) -> None:
    b = fast_bridge
    host, port = b.broker
    status, visit = await b.call(
        "POST",
        "/api/v1/commissioning/unit-c",
        user="ian",
        role="installer",
        json={"minutes": 0.03, "peripherals": ["pendant-1"]},
    )
    assert status == 201 and visit["total"] == 1
    async with SimulatedUnit(
        "unit-c", host=host, port=port, topic_root=topic_root, call_connects=False
    ) as unit:
        ack = await unit.send("pendant", test=True, timeout=20)

        async def closed() -> bool:
            return (await progress(b))["finished_at"] is not None

        await eventually(closed, timeout=20)
        visit = await progress(b)
        assert visit["finish_reason"] == "timed out" and visit["summary"]["passed"]
        alert, _ = await b.store.get_alert(ack["alert_id"])
        assert alert.test and alert.outcome == "test"
        ack = await unit.send("pendant", test=True, timeout=20)
        alert, _ = await b.store.get_alert(ack["alert_id"])
        assert not alert.test


async def test_commissioning_bad_requests(fast_bridge: RunningBridge) -> None:
    b = fast_bridge
    for body, code in (({"minutes": 100000}, 422), ({"peripherals": ["nope"]}, 422), ({"minutes": -1}, 422)):
        status, _ = await b.call(
            "POST", "/api/v1/commissioning/unit-c", user="ian", role="installer", json=body
        )
        assert status == code, body
    status, _ = await b.call("POST", "/api/v1/commissioning/ghost", user="ian", role="installer", json={})
    assert status == 404
    status, _ = await b.call(
        "POST", "/api/v1/commissioning/unit-c/finish", user="ian", role="installer", json={}
    )
    assert status == 409
    status, _ = await b.call("GET", "/api/v1/commissioning/unit-c", user="ian", role="installer")
    assert status == 404
