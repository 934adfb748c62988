"""The registry through the API: residents, devices, links, retiring, roles, and every bad-input case."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from harness import RunningBridge

from devices.events import DeviceEvent
from devices.vocabulary import EventType

ADA = {
    "id": "res-ada",
    "name": "Ada Lovelace",
    "address": "1 Mill Lane, Leeds LS1 1AA",
    "key_safe": "by the back door, code 4321",
    "medical_notes": "MS; uses a wheelchair",
    "language": "en-GB",
    "responders": [
        {"name": "Tom (son)", "phone": "+447700900123"},
        {"name": "Ann (neighbour)", "phone": "+447700900456"},
    ],
}
UNIT = {
    "id": "unit-ada",
    "kind": "gsm_unit",
    "resident_id": "res-ada",
    "phone": "+447700900999",
    "imei": "490154203237518",
    "firmware": "2.4.1",
    "heartbeat_interval_s": 900,
    "heartbeat_grace_s": 60,
    "peripherals": [
        {"id": "pendant-1", "type": "pendant", "location": "neck"},
        {"id": "smoke-1", "type": "smoke", "location": "hall"},
    ],
}


async def installer(b: RunningBridge, method: str, path: str, body: object = None) -> tuple[int, object]:
    return await b.call(method, path, user="ian", role="installer", json=body)


async def test_resident_and_unit_round_trip(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, body = await installer(b, "POST", "/api/v1/residents", ADA)
    assert status == 201, body
    status, body = await installer(b, "POST", "/api/v1/devices", UNIT)
    assert status == 201, body
    assert body["status"] == "active" and body["peripherals"][1]["type"] == "smoke"
    assert body["effective_heartbeat"] == {"interval_s": 900, "grace_s": 60}
    assert body["heartbeat_due_at"] is not None  # supervised from registration on
    # The console and escalation read resident details from residents.data, responders in order.
    async with b.store.read() as tx:
        row = await tx.fetchone("SELECT name, data FROM residents WHERE id = ?", "res-ada")
    data = json.loads(row["data"])
    assert row["name"] == "Ada Lovelace" and data["key_safe"].startswith("by the back door")
    assert [r["phone"] for r in data["responders"]] == ["+447700900123", "+447700900456"]
    # Operators read (they need the address and key safe on a call); they change nothing.
    status, body = await b.call("GET", "/api/v1/residents/res-ada", user="olive", role="operator")
    assert status == 200 and body["devices"][0]["id"] == "unit-ada" and body["address"].startswith("1 Mill")
    status, body = await b.call(
        "PATCH", "/api/v1/residents/res-ada", user="olive", role="operator", json={"language": "cy"}
    )
    assert status == 403
    status, body = await installer(b, "PATCH", "/api/v1/residents/res-ada", {"language": "cy"})
    # Need to know (docs/data-protection.md): responders are write-only for an installer, and kept.
    assert status == 200 and body["language"] == "cy" and "responders" in body["hidden"]
    assert "responders" not in body and "key_safe" not in body and "medical_notes" not in body
    status, body = await b.call("GET", "/api/v1/residents/res-ada", user="olive", role="operator")
    assert len(body["responders"]) == 2 and body["language"] == "cy"
    status, body = await installer(b, "PATCH", "/api/v1/devices/unit-ada", {"firmware": "2.5.0"})
    assert status == 200 and body["firmware"] == "2.5.0" and body["imei"] == UNIT["imei"]
    status, body = await b.call("GET", "/api/v1/devices?resident_id=res-ada", user="olive", role="operator")
    assert status == 200 and [d["id"] for d in body["devices"]] == ["unit-ada"]
    status, body = await installer(b, "GET", "/api/v1/devices/unit-ada")
    assert [h["action"] for h in body["history"]] == ["device_updated", "device_registered"]


async def test_duplicate_ids_are_409(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    assert (await installer(b, "POST", "/api/v1/residents", ADA))[0] == 201
    status, body = await installer(b, "POST", "/api/v1/residents", {"id": "res-ada", "name": "Someone else"})
    assert status == 409 and "already registered" in body["detail"]["message"]
    assert (await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "ip_unit"}))[0] == 201
    status, body = await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit"})
    assert status == 409 and "u1" in body["detail"]["message"]
    # The same SIM or IMEI on a second unit is refused, naming the unit that has it.
    assert (await installer(b, "POST", "/api/v1/devices", {**UNIT, "resident_id": None}))[0] == 201
    status, body = await installer(
        b, "POST", "/api/v1/devices", {"id": "u2", "kind": "gsm_unit", "phone": UNIT["phone"]}
    )
    assert status == 422 and "phone" in body["detail"] and "unit-ada" in body["detail"]


async def test_phone_numbers_must_be_e164(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    for phone in ("07700 900123", "447700900123", "+44 7700 900123", "+0447700900", "call Tom"):
        status, body = await installer(
            b,
            "POST",
            "/api/v1/residents",
            {"id": "r1", "name": "R", "responders": [{"name": "Tom", "phone": phone}]},
        )
        assert status == 422, phone
        assert body["detail"][0]["field"] == "responders.0.phone" and "E.164" in body["detail"][0]["message"]
        status, body = await installer(
            b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "phone": phone}
        )
        assert status == 422 and body["detail"][0]["field"] == "phone"
    status, body = await installer(
        b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "imei": "490154203237519"}
    )
    assert status == 422 and body["detail"][0]["field"] == "imei"


async def test_links_to_unknown_residents_or_devices(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, body = await installer(
        b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "resident_id": "nobody"}
    )
    assert status == 422 and "resident_id" in body["detail"] and "nobody" in body["detail"]
    assert (await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit"}))[0] == 201
    assert (
        await installer(
            b,
            "POST",
            "/api/v1/devices",
            {"id": "echo-1", "kind": "alexa", "alexa_device_id": "amzn1.ask.device.X"},
        )
    )[0] == 201
    status, body = await installer(b, "POST", "/api/v1/links", {"device_id": "u1", "resident_id": "nobody"})
    assert status == 422 and body["detail"].startswith("resident_id")
    status, body = await installer(
        b, "POST", "/api/v1/links", {"device_id": "ghost", "resident_id": "res-ada"}
    )
    assert status == 422 and body["detail"].startswith("device_id")
    assert (await installer(b, "POST", "/api/v1/residents", ADA))[0] == 201
    for device in ("u1", "echo-1"):
        status, body = await installer(
            b, "POST", "/api/v1/links", {"device_id": device, "resident_id": "res-ada"}
        )
        assert status == 200 and body["resident_id"] == "res-ada"
    status, body = await installer(b, "GET", "/api/v1/residents")
    assert body["residents"][0]["devices"] == 2
    status, body = await installer(b, "POST", "/api/v1/links", {"device_id": "u1", "resident_id": None})
    assert status == 200 and body["resident_id"] is None
    status, body = await installer(b, "PATCH", "/api/v1/devices/ghost", {"firmware": "1"})
    assert status == 404


async def test_retiring_a_unit_with_an_open_alert_is_refused(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    assert (
        await installer(
            b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "phone": "+447700900111"}
        )
    )[0] == 201
    result = await b.bridge.intake.submit(DeviceEvent("u1", "e1", EventType.PENDANT, datetime.now(UTC)))
    status, body = await installer(b, "POST", "/api/v1/devices/u1/retire", {"reason": "resident moved"})
    assert status == 409
    assert f"open alerts: {result.alert_id} (pendant, raised)" in body["detail"]["message"]
    assert (await b.call("POST", f"/api/v1/alerts/{result.alert_id}/acknowledge"))[0] == 200
    assert (
        await b.call("POST", f"/api/v1/alerts/{result.alert_id}/resolve", json={"outcome": "resident_ok"})
    )[0] == 200
    status, body = await installer(b, "POST", "/api/v1/devices/u1/retire", {"reason": "resident moved"})
    assert status == 200 and body["status"] == "retired" and body["phone"] is None
    assert body["heartbeat_due_at"] is None
    status, body = await installer(b, "POST", "/api/v1/devices/u1/retire")
    assert status == 409 and "already retired" in body["detail"]["message"]
    status, body = await installer(b, "PATCH", "/api/v1/devices/u1", {"firmware": "9"})
    assert status == 409
    # Its SIM can go into a new unit; the retired unit's id is never reused.
    assert (
        await installer(
            b, "POST", "/api/v1/devices", {"id": "u2", "kind": "gsm_unit", "phone": "+447700900111"}
        )
    )[0] == 201
    status, body = await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit"})
    assert status == 409 and "retired" in body["detail"]["message"]
    # A retired unit's help events still raise an alert, flagged unregistered.
    result = await b.bridge.intake.submit(DeviceEvent("u1", "e2", EventType.PENDANT, datetime.now(UTC)))
    alert, _ = await b.store.get_alert(result.alert_id)
    assert alert.unregistered
    status, body = await installer(b, "GET", "/api/v1/devices?status=retired")
    assert [d["id"] for d in body["devices"]] == ["u1"]


async def test_installer_cannot_do_an_operators_job(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    result = await b.bridge.intake.submit(DeviceEvent("u9", "e1", EventType.FALL, datetime.now(UTC)))
    for action, body in (
        ("acknowledge", None),
        ("resolve", {"outcome": "resident_ok"}),
        ("notes", {"note": "hello"}),
    ):
        status, answer = await installer(b, "POST", f"/api/v1/alerts/{result.alert_id}/{action}", body)
        assert status == 403 and "installer" in answer["detail"], action
    # ... and operators cannot do an installer's.
    for method, path, body in (
        ("POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit"}),
        ("POST", "/api/v1/residents", ADA),
        ("POST", "/api/v1/commissioning/u9", {}),
        ("POST", "/api/v1/registry/import?format=yaml", None),
    ):
        status, _ = await b.call(method, path, user="olive", role="operator", json=body)
        assert status == 403, path


async def test_bad_bodies(embedded_bridge: RunningBridge) -> None:
    b = embedded_bridge
    status, body = await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "toaster"})
    assert status == 422 and body["detail"][0]["field"] == "kind"
    status, body = await installer(
        b,
        "POST",
        "/api/v1/devices",
        {
            "id": "u1",
            "kind": "gsm_unit",
            "peripherals": [{"id": "p1", "type": "pendant"}, {"id": "p1", "type": "smoke"}],
        },
    )
    assert status == 422 and "unique" in json.dumps(body)
    status, body = await installer(
        b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit", "colour": "red"}
    )
    assert status == 422 and body["detail"][0]["field"] == "colour"
    for dots in (".", ".."):
        status, body = await installer(b, "POST", "/api/v1/devices", {"id": dots, "kind": "gsm_unit"})
        assert status == 422 and body["detail"][0]["field"] == "id", dots
        status, body = await installer(b, "POST", "/api/v1/residents", {"id": dots, "name": "Dot"})
        assert status == 422 and body["detail"][0]["field"] == "id", dots
    assert (await installer(b, "POST", "/api/v1/devices", {"id": "u1", "kind": "gsm_unit"}))[0] == 201
    status, body = await installer(b, "PATCH", "/api/v1/devices/u1", {"id": "u2"})
    assert status == 422 and "cannot be changed" in json.dumps(body)
    status, body = await installer(b, "PATCH", "/api/v1/devices/u1", {"heartbeat_interval_s": 1})
    assert status == 422 and body["detail"][0]["field"] == "heartbeat_interval_s"
