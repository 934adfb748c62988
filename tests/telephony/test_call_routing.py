"""Who a call goes to, and what operators do with it: the operator holding the alert first, else the
longest idle; a decline passes it on at once; nobody free means the caller waits (and is offered as soon
as someone is); a transfer hands it over when the other operator answers; a hang-up on either side ends
it, and every phone still ringing stops."""

from __future__ import annotations

from clock import SteppedClock
from escalation_support import raise_alert
from harness import RunningBridge
from telephony_support import (
    ALICE_PHONE,
    BOB_PHONE,
    CENTRE,
    UNIT_SIM,
    available,
    call_actions,
    call_entries,
    ringing,
    settle,
)

from simulators.twilio_server import TwilioServer


async def only_call(bridge: RunningBridge, alert_id: object = None) -> dict[str, object]:
    """The one live call (or the one call of ``alert_id``, ended or not)."""
    query = "" if alert_id is None else f"?alert_id={alert_id}"
    status, body = await bridge.call("GET", "/api/v1/calls" + query, user="alice")
    assert status == 200 and len(body["calls"]) == 1, body
    call: dict[str, object] = body["calls"][0]
    return call


async def unit_with_sim(bridge: RunningBridge) -> None:
    status, body = await bridge.call(
        "POST",
        "/api/v1/devices",
        user="ian",
        role="admin",
        json={"id": "unit-9", "kind": "gsm_unit", "phone": UNIT_SIM},
    )
    assert status == 201, body


async def test_the_operator_holding_the_alert_is_offered_its_call_first(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await unit_with_sim(bridge)
    await available(bridge, "bob")
    clock.advance(30)
    await available(bridge, "alice")
    alert_id = await raise_alert(bridge, "unit-9", "pendant")
    status, _ = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
    assert status == 200
    caller = await twilio.dial_in(UNIT_SIM, CENTRE)
    leg = await ringing(twilio, ALICE_PHONE)  # not bob, though he has been idle longer
    offered = await call_entries(bridge, alert_id, "call_offered")
    assert [o["operator"] for o in offered] == ["alice"] and offered[0]["via"] == "phone"
    await twilio.answer(leg.sid)
    await twilio.hang_up(caller.sid)


async def test_a_decline_passes_the_call_on_at_once_and_is_not_offered_again(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await available(bridge, "bob")
    clock.advance(30)
    await available(bridge, "alice")
    caller = await twilio.dial_in("+447700900432", CENTRE)
    bobs = await ringing(twilio, BOB_PHONE)
    call = await only_call(bridge)
    status, body = await bridge.call("POST", f"/api/v1/calls/{call['id']}/decline", user="alice")
    assert status == 409, "alice has nothing ringing to decline"
    status, body = await bridge.call("POST", f"/api/v1/calls/{call['id']}/decline", user="bob")
    assert status == 200, body
    alices = await ringing(twilio, ALICE_PHONE)
    await twilio.settled()
    assert twilio.voice.calls[bobs.sid].status == "canceled"
    await twilio.refuse(alices.sid, "busy")  # alice is busy too: bob declined, so nobody is left to ring
    await settle(bridge)
    actions = await call_actions(bridge, str(call["alert_id"]))
    assert actions.count("call_offered") == 2 and actions[-1] == "call_queued", actions
    unanswered = await call_entries(bridge, str(call["alert_id"]), "call_offer_unanswered")
    assert [(u["operator"], u["result"]) for u in unanswered] == [("bob", "declined"), ("alice", "busy")]
    await twilio.hang_up(caller.sid)
    await twilio.settled()
    await settle(bridge)
    call = await only_call(bridge, call["alert_id"])
    assert (call["state"], call["result"]) == ("ended", "abandoned")


async def test_a_caller_waits_until_an_operator_comes_free(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    caller = await twilio.dial_in("+447700900432", CENTRE)
    assert caller.conference and twilio.voice.conferences[caller.conference].status == "init", "on hold"
    call = await only_call(bridge)
    queued = await call_entries(bridge, str(call["alert_id"]), "call_queued")
    assert queued and "no operator is free" in queued[0]["reason"]
    status, body = await bridge.call("GET", "/api/v1/telephony/presence", user="alice")
    assert status == 200 and body["takes_calls"] and body["available"] is False and body["via"] == "phone"
    await available(bridge, "alice")
    leg = await ringing(twilio, ALICE_PHONE)
    await twilio.answer(leg.sid)
    await settle(bridge)
    status, body = await bridge.call("GET", "/api/v1/telephony/presence", user="bob")
    assert {o["operator"]: o["on_call"] for o in body["operators"]} == {"alice": True, "bob": False}
    # alice hangs up from the console: the caller is hung up at Twilio and the call ends
    call = await only_call(bridge)
    status, body = await bridge.call("POST", f"/api/v1/calls/{call['id']}/hangup", user="alice")
    assert status == 200, body
    await settle(bridge)
    await twilio.settled()
    await settle(bridge)
    assert twilio.voice.calls[caller.sid].status == "completed"
    call = await only_call(bridge, call["alert_id"])
    assert (call["state"], call["result"]) == ("ended", "answered")
    ended = await call_entries(bridge, str(call["alert_id"]), "call_ended")
    assert ended[0]["reason"] == "alice hung up"


async def test_a_transfer_hands_the_call_over_when_the_other_operator_answers(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    await available(bridge, "alice")
    caller = await twilio.dial_in("+447700900432", CENTRE)
    alices = await ringing(twilio, ALICE_PHONE)
    await twilio.answer(alices.sid)
    await settle(bridge)
    call = await only_call(bridge)
    for user, body, expected in [
        ("bob", {"operator": "alice"}, 409),  # bob is not on the call
        ("alice", {"operator": "alice"}, 422),  # to herself
        ("alice", {"operator": "mallory"}, 422),  # takes no calls
        ("alice", {"operator": ""}, 422),
        ("alice", {"operator": 7}, 422),
        ("alice", {"to": "bob"}, 422),
    ]:
        status, answer = await bridge.call(
            "POST", f"/api/v1/calls/{call['id']}/transfer", user=user, json=body
        )
        assert status == expected, (user, body, answer)
    status, answer = await bridge.call(
        "POST", f"/api/v1/calls/{call['id']}/transfer", user="alice", json={"operator": "bob"}
    )
    assert status == 200, answer
    bobs = await ringing(twilio, BOB_PHONE)
    assert twilio.voice.calls[alices.sid].status == "in-progress", "alice stays until bob answers"
    await twilio.answer(bobs.sid)
    await settle(bridge)
    await twilio.settled()
    await settle(bridge)
    assert twilio.voice.calls[alices.sid].status == "completed"
    call = await only_call(bridge)
    assert call["state"] == "connected" and call["operator"] == "bob"
    [moved] = await call_entries(bridge, str(call["alert_id"]), "call_transferred")
    assert (moved["from"], moved["to"]) == ("alice", "bob")
    await twilio.hang_up(caller.sid)
    await twilio.settled()
    await settle(bridge)
    call = await only_call(bridge, call["alert_id"])
    assert call["state"] == "ended"
