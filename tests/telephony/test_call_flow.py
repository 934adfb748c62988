"""Whole calls through the local Twilio stand-in, on a real bridge: a unit's speech call in, matched to its
alert, offered, answered, recorded, the recording on the timeline and played by a supervisor; a caller
nobody knows; the overflow after nobody answers (injected clock); a click-to-dial conference with a
responder, and a third party added."""

from __future__ import annotations

from clock import SteppedClock
from escalation_support import raise_alert
from harness import RunningBridge
from telephony_support import (
    ALICE_PHONE,
    BOB_PHONE,
    CENTRE,
    OVERFLOW,
    RESIDENT_PHONE,
    RESPONDER_PHONE,
    UNIT_SIM,
    advance,
    available,
    call_actions,
    call_entries,
    ringing,
    settle,
)

from simulators.twilio_server import TwilioServer
from simulators.twilio_voice import SILENT_MP3


async def register_mary(bridge: RunningBridge) -> None:
    resident = {
        "id": "res-mary",
        "name": "Mary Jones",
        "address": "3 Acacia Avenue",
        "phone": RESIDENT_PHONE,
        "responders": [{"name": "Tom (son)", "phone": RESPONDER_PHONE}],
    }
    status, body = await bridge.call("POST", "/api/v1/residents", user="ian", role="admin", json=resident)
    assert status == 201, body
    unit = {"id": "unit-7", "kind": "gsm_unit", "resident_id": "res-mary", "phone": UNIT_SIM}
    status, body = await bridge.call("POST", "/api/v1/devices", user="ian", role="admin", json=unit)
    assert status == 201, body


async def calls_of(bridge: RunningBridge, alert_id: str) -> list[dict[str, object]]:
    status, body = await bridge.call("GET", f"/api/v1/calls?alert_id={alert_id}", user="alice")
    assert status == 200, body
    calls: list[dict[str, object]] = body["calls"]
    return calls


async def test_a_units_call_is_matched_offered_answered_recorded_and_played(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await register_mary(bridge)
    await available(bridge, "bob")
    clock.advance(5)
    await available(bridge, "alice")  # bob has been idle longer: he is offered the call first
    alert_id = await raise_alert(bridge, "unit-7", "fall")

    # The unit opens its speech call to the centre (as asked by call_centre): Twilio posts /twilio/voice.
    caller = await twilio.dial_in(UNIT_SIM, CENTRE)
    assert caller.heard == ["This call is recorded."] and caller.conference == f"telecare-call-{1}"
    [call] = await calls_of(bridge, alert_id)
    assert (call["state"], call["matched"], call["caller"]) == ("waiting", "unit_sim", UNIT_SIM)

    leg = await ringing(twilio, BOB_PHONE)
    assert 'startConferenceOnEnter="true"' in (leg.twiml or "")
    await twilio.refuse(leg.sid, "no-answer")  # bob does not pick up: alice is next
    leg = await ringing(twilio, ALICE_PHONE)
    clock.advance(17)
    await twilio.answer(leg.sid)
    await settle(bridge)
    [call] = await calls_of(bridge, alert_id)
    assert call["state"] == "connected" and call["operator"] == "alice"
    answered = (await call_entries(bridge, alert_id, "call_answered"))[0]
    assert answered["operator"] == "alice" and answered["offered_to_answered_s"] == 17.0
    assert answered["signal_to_speech_s"] >= 17.0

    clock.advance(42)  # they talk; then Mary hangs up and the conference (recorded) ends
    await twilio.hang_up(caller.sid)
    await twilio.settled()
    await settle(bridge)
    [call] = await calls_of(bridge, alert_id)
    assert call["state"] == "ended" and call["result"] == "answered"
    [recording] = call["recordings"]
    assert (recording["duration_s"], recording["channels"]) == (42, 1)
    recorded = (await call_entries(bridge, alert_id, "call_recorded"))[0]
    assert recorded["recording_id"] == recording["id"] and recorded["duration_s"] == 42
    assert await call_actions(bridge, alert_id) == [
        "call_in",
        "call_offered",
        "call_offer_unanswered",
        "call_offered",
        "call_answered",
        "call_left",
        "call_ended",
        "call_left",
        "call_recorded",
    ]

    # A supervisor plays it through the bridge; an operator may not; nobody gets Twilio's URL.
    audio = f"/api/v1/recordings/{recording['id']}/audio"
    async with bridge.session.get(
        bridge.url + audio, headers={"Authorization": f"Bearer {await bridge.token('sue', 'supervisor')}"}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "audio/mpeg"
        assert resp.headers["Cache-Control"] == "no-store"
        assert await resp.read() == SILENT_MP3
    status, _ = await bridge.call("GET", audio, user="alice")
    assert status == 403
    played = await call_entries(bridge, alert_id, "call_recording_played")
    assert played and played[0]["actor"] == "sue"
    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}", user="alice")
    assert twilio.base_url not in str(body), "the recording's own URL never leaves the bridge"

    status, report = await bridge.call("GET", "/api/v1/calls/service-levels", user="sue", role="supervisor")
    offered = report["measures"]["offered"]["total"]
    assert status == 200 and (offered["count"], offered["within_60s"]) == (1, 1)
    assert offered["meets_97_5_in_60s"] is True and offered["meets_98_5_in_60s"] is True
    status, metrics = await bridge.call("GET", "/metrics", user=None)
    assert 'telecare_call_answer_seconds_count{measure="offered"} 1.0' in metrics


async def test_a_caller_nobody_knows_reaches_an_operator_on_an_unregistered_alert(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    await available(bridge, "alice")
    caller = await twilio.dial_in("+447700900999", CENTRE)
    leg = await ringing(twilio, ALICE_PHONE)
    await twilio.answer(leg.sid)
    await settle(bridge)
    status, body = await bridge.call("GET", "/api/v1/calls", user="alice")
    [call] = body["calls"]
    assert call["matched"] == "unmatched" and call["state"] == "connected"
    alert, _ = await bridge.store.get_alert(call["alert_id"])
    assert alert.unregistered and alert.type == "voice_help" and alert.priority == 1
    assert alert.device_id == "caller-447700900999"
    assert alert.data["event_data"]["caller_id"] == "+447700900999"
    assert alert.data["unregistered_hint"]["caller_id"] == "+447700900999"
    assert "command_sent" not in [e.action for e in (await bridge.store.get_alert(alert.id))[1]]
    await twilio.hang_up(caller.sid)


async def test_overflow_after_nobody_answers(
    bridge: RunningBridge, twilio: TwilioServer, clock: SteppedClock
) -> None:
    await available(bridge, "alice")
    alert_id = await raise_alert(bridge, "unit-of-nobody", "pendant")
    caller = await twilio.dial_in("+447700900321", CENTRE)
    first = await ringing(twilio, ALICE_PHONE)
    await advance(
        bridge, clock, 20.5, twilio
    )  # alice's phone rings out: the offer is stopped, then made again
    assert twilio.voice.calls[first.sid].status == "canceled"
    again = await ringing(twilio, ALICE_PHONE)
    await advance(bridge, clock, 20, twilio)
    assert twilio.voice.calls[again.sid].status == "canceled"
    third = await ringing(twilio, ALICE_PHONE)
    await advance(bridge, clock, 20, twilio)  # 60.5 s: the partner centre rings too
    partner = await ringing(twilio, OVERFLOW)
    await twilio.answer(partner.sid)
    await twilio.settled()
    await settle(bridge)
    status, body = await bridge.call("GET", "/api/v1/calls", user="alice")
    [call] = body["calls"]
    assert call["state"] == "connected" and call["operator"] == f"overflow:{OVERFLOW}"
    assert twilio.voice.calls[third.sid].status in ("canceled", "no-answer")
    overflowed = await call_entries(bridge, call["alert_id"], "call_overflowed")
    assert overflowed and overflowed[0]["to"] == OVERFLOW and overflowed[0]["waited_s"] >= 60
    assert call["alert_id"] != alert_id  # an unknown caller: an alert of its own, not the unit's
    await twilio.hang_up(caller.sid)


async def test_click_to_dial_rings_the_operator_then_the_responder_and_a_third_party(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    await register_mary(bridge)
    alert_id = await raise_alert(bridge, "unit-7", "fall")
    status, body = await bridge.call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", user="alice")
    assert status == 200
    status, call = await bridge.call(
        "POST", f"/api/v1/alerts/{alert_id}/calls", user="alice", json={"to": "responder", "responder": 0}
    )
    assert status == 201 and call["state"] == "dialing", call
    mine = await ringing(twilio, ALICE_PHONE)  # the operator first
    assert twilio.calls[-1].to == ALICE_PHONE, "nobody else rings before the operator answers"
    await twilio.answer(mine.sid)
    await settle(bridge)
    tom = await ringing(twilio, RESPONDER_PHONE)
    assert "This call is recorded." in tom.spoken_text
    await twilio.answer(tom.sid)
    await settle(bridge)
    status, call = await bridge.call(
        "POST", f"/api/v1/calls/{call['id']}/parties", user="alice", json={"to": "emergency"}
    )
    assert status == 200, call
    ambulance = await ringing(twilio, "999")
    await twilio.answer(ambulance.sid)
    await settle(bridge)
    status, call = await bridge.call("GET", f"/api/v1/calls/{call['id']}", user="alice")
    room = twilio.voice.conferences[f"telecare-call-{call['id']}"]
    assert len(room.participants) == 3 and room.status == "in-progress"
    assert call["emergency"] is True and call["speech_at"] is not None
    parties = {leg["party"]: leg["state"] for leg in call["legs"]}
    assert parties == {
        "alice": "answered",
        "responder Tom (son)": "answered",
        "emergency services": "answered",
    }

    status, ended = await bridge.call("POST", f"/api/v1/calls/{call['id']}/hangup", user="alice")
    assert status == 200
    await settle(bridge)
    await twilio.settled()
    await settle(bridge)
    status, call = await bridge.call("GET", f"/api/v1/calls/{call['id']}", user="alice")
    assert call["state"] == "ended" and call["result"] == "answered"
    assert all(twilio.voice.calls[leg.sid].status == "completed" for leg in (mine, tom, ambulance))
    assert [r["channels"] for r in call["recordings"]] == [1]
    actions = await call_actions(bridge, alert_id)
    for expected in (
        "call_dialled",
        "call_answered",
        "call_party_added",
        "call_party_answered",
        "call_ended",
    ):
        assert expected in actions, actions
