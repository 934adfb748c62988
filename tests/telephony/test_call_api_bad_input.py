"""Bad input on every telephony route: malformed and oversized bodies, wrong types, unknown fields, unknown
ids, parties with no number, operators who take no calls, and roles without the right. Each gets a JSON
4xx naming what is wrong; nothing is dialled."""

from __future__ import annotations

from typing import Any

import pytest
from escalation_support import raise_alert
from harness import RunningBridge

from simulators.twilio_server import TwilioServer

CALL_ROUTES = [
    ("GET", "/api/v1/calls/{id}"),
    ("POST", "/api/v1/calls/{id}/hangup"),
    ("POST", "/api/v1/calls/{id}/decline"),
]


async def raw(
    bridge: RunningBridge, method: str, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {await bridge.token('alice')}", "Content-Type": content_type}
    async with bridge.session.request(method, bridge.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_dialling_refuses_what_it_cannot_dial(bridge: RunningBridge, twilio: TwilioServer) -> None:
    alert_id = await raise_alert(bridge, "unit-bad", "pendant")  # no resident, no SIM on record
    path = f"/api/v1/alerts/{alert_id}/calls"
    cases: list[tuple[Any, int, str]] = [
        ({}, 422, "to"),
        ({"to": "the moon"}, 422, "to"),
        ({"to": "resident"}, 422, "no phone number on record"),
        ({"to": "unit"}, 422, "no SIM number"),
        ({"to": "responder"}, 422, "position"),
        ({"to": "responder", "responder": 0}, 422, "no such responder"),
        ({"to": "responder", "responder": -1}, 422, "responder"),
        ({"to": "responder", "responder": "0"}, 422, "responder"),
        ({"to": "number"}, 422, "give the number"),
        ({"to": "number", "number": "447700900123"}, 422, "E.164"),
        ({"to": "number", "number": "+44 7700 900123"}, 422, "E.164"),
        ({"to": "number", "number": "+4477009001234567890"}, 422, "number"),
        ({"to": "number", "number": 447700900123}, 422, "number"),
        ({"to": "emergency", "extra": True}, 422, "extra"),
        ([{"to": "emergency"}], 400, "object"),
    ]
    for body, status, words in cases:
        got, answer = await bridge.call("POST", path, user="alice", json=body)
        assert got == status and words in str(answer), (body, got, answer)
    for body, status in [(b'{"to": ', 400), (b'{"to": NaN}', 400), (b"x" * 70_000, 413)]:
        got, answer = await raw(bridge, "POST", path, body)
        assert got == status, (body[:20], answer)
    got, answer = await raw(bridge, "POST", path, b'{"to": "emergency"}', "text/plain")
    assert got == 415
    for bad in ("999999", "abc", "1e3", "-1", "9" * 30):
        got, answer = await bridge.call(
            "POST", f"/api/v1/alerts/{bad}/calls", user="alice", json={"to": "emergency"}
        )
        assert got == 404 and answer["error"] == "not found", (bad, answer)
    got, answer = await bridge.call("POST", path, user="mallory", json={"to": "emergency"})
    assert got == 422 and "takes no calls" in answer["detail"]
    got, answer = await bridge.call("POST", path, user="ian", role="installer", json={"to": "emergency"})
    assert got == 403
    assert twilio.calls == [], "nothing was dialled"


async def test_unknown_calls_and_wrong_callers_are_refused(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    for method, template in CALL_ROUTES:
        for bad, status in (("424242", 404), ("abc", 404), ("0x1", 404), ("9" * 30, 404)):
            got, answer = await bridge.call(method, template.format(id=bad), user="alice")
            assert got == status and answer["error"] == "not found", (method, template, bad, answer)
    got, answer = await bridge.call("POST", "/api/v1/calls/1/parties", user="alice", json={"to": "emergency"})
    assert got == 404
    got, answer = await bridge.call(
        "POST", "/api/v1/calls/1/transfer", user="alice", json={"operator": "bob"}
    )
    assert got == 404
    alert_id = await raise_alert(bridge, "unit-bad-2", "pendant")
    got, call = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/calls", user="alice", json={"to": "emergency"}
    )
    assert got == 201
    # alice's own phone rings: nobody else may hang it up, decline it, or add to it
    for method, path, body in [
        ("POST", f"/api/v1/calls/{call['id']}/hangup", None),
        ("POST", f"/api/v1/calls/{call['id']}/decline", None),
        ("POST", f"/api/v1/calls/{call['id']}/parties", {"to": "emergency"}),
        ("POST", f"/api/v1/calls/{call['id']}/transfer", {"operator": "alice"}),
    ]:
        got, answer = await bridge.call(method, path, user="bob", json=body)
        assert got == 409, (path, answer)
    got, answer = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/calls", user="alice", json={"to": "emergency"}
    )
    assert got == 409 and "already on a call" in str(answer), "one call at a time"
    got, answer = await bridge.call("POST", f"/api/v1/calls/{call['id']}/hangup", user="alice")
    assert got == 200 and answer["state"] == "ended" and answer["result"] == "cancelled"
    for query, status in (("?alert_id=abc", 422), ("?alert_id=-3", 422), (f"?alert_id={alert_id}", 200)):
        got, answer = await bridge.call("GET", "/api/v1/calls" + query, user="alice")
        assert got == status, (query, answer)


@pytest.mark.parametrize(
    ("body", "status"),
    [({}, 422), ({"available": "yes"}, 422), ({"available": None}, 422), ({"available": True, "x": 1}, 422)],
)
async def test_presence_takes_a_boolean(bridge: RunningBridge, body: dict[str, Any], status: int) -> None:
    got, answer = await bridge.call("PUT", "/api/v1/telephony/presence", user="alice", json=body)
    assert got == status, answer


async def test_presence_tokens_and_recordings_for_the_wrong_people(bridge: RunningBridge) -> None:
    got, answer = await bridge.call(
        "PUT", "/api/v1/telephony/presence", user="mallory", json={"available": True}
    )
    assert got == 422 and "takes no calls" in answer["detail"]
    got, answer = await bridge.call(
        "PUT", "/api/v1/telephony/presence", user="ian", role="installer", json={"available": True}
    )
    assert got == 403
    got, answer = await bridge.call("GET", "/api/v1/telephony/token", user="alice")
    assert got == 409 and "browser" in str(answer), "alice takes calls on her phone"
    got, me = await bridge.call("GET", "/api/v1/telephony/presence", user="mallory")
    assert got == 200 and me["takes_calls"] is False and me["sdk"] is None
    for bad, status in (("1", 404), ("abc", 404), ("9" * 30, 404)):
        got, answer = await bridge.call(
            "GET", f"/api/v1/recordings/{bad}/audio", user="sue", role="supervisor"
        )
        assert got == status, (bad, answer)
    got, answer = await bridge.call("GET", "/api/v1/recordings/1/audio", user="alice")
    assert got == 403
    for body in ({}, {"month": "2026-5"}, {"month": 202605}, {"month": "2026-05", "x": 1}):
        got, answer = await bridge.call(
            "POST", "/api/v1/call-audit/draw", user="sue", role="supervisor", json=body
        )
        assert got == 422, (body, answer)
    got, answer = await bridge.call(
        "POST", "/api/v1/call-audit/draw", user="sue", role="supervisor", json={"month": "2026-13"}
    )
    assert got == 422
    got, answer = await bridge.call("GET", "/api/v1/call-audit.csv?month=x", user="sue", role="supervisor")
    assert got == 422
