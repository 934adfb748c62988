"""The call webhooks: the stand-in signs like Twilio (twilio's own RequestValidator accepts it, query
strings included); the bridge refuses forged, unsigned, tampered, replayed and malformed ones on every
call route, acts on none of them, and answers 404 while telephony is off."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from harness import RunningBridge, running_bridge
from hypothesis import given, settings
from hypothesis import strategies as st
from telephony_support import ALICE_PHONE, CENTRE, available, call_actions, ringing
from twilio.request_validator import RequestValidator

from alarm_centre.escalation.twilio import WebhookRejected
from alarm_centre.telephony.webhooks import parse_conference_event, parse_leg_status, parse_recording
from simulators.twilio_server import TwilioServer, new_sid


async def test_twilios_own_validator_accepts_the_stand_ins_signatures(twilio: TwilioServer) -> None:
    """A receiver of our own records every webhook of a whole call; RequestValidator checks each one."""
    seen: list[tuple[str, dict[str, str], str]] = []
    room = "room-1"

    async def receive(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(
            (str(request.url), {k: str(v) for k, v in form.items()}, request.headers["X-Twilio-Signature"])
        )
        if request.path == "/voice":
            events = "start end join leave"
            base = f"http://127.0.0.1:{request.url.port}"
            return web.Response(
                text="<Response><Say>Hello</Say><Dial>"
                f'<Conference statusCallback="{base}/conf?call=7&amp;x=a%20b" '
                f'statusCallbackEvent="{events}" record="record-from-start" recordingStatusCallback='
                f'"{base}/rec?call=7" endConferenceOnExit="true">{room}</Conference></Dial></Response>',
                content_type="application/xml",
            )
        return web.Response(text="<Response/>", content_type="application/xml")

    app = web.Application()
    app.router.add_post("/{any:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        caller = await twilio.dial_in("+447700900123", CENTRE, f"http://127.0.0.1:{port}/voice?number=1")
        await twilio.hang_up(caller.sid)
    finally:
        await runner.cleanup()
    kinds = [
        params.get("StatusCallbackEvent") or params.get("RecordingStatus") or params["Direction"]
        for _, params, _ in seen
    ]
    assert kinds == [
        "inbound", "participant-join", "conference-start", "participant-leave", "conference-end", "completed"
    ]  # fmt: skip
    validator = RequestValidator(twilio.auth_token)
    for url, params, signature in seen:
        assert "?" in url
        assert validator.validate(url, params, signature), url
        assert not validator.validate(url, {**params, "CallSid": new_sid("CA")}, signature)
    assert not RequestValidator("another-token").validate(seen[0][0], seen[0][1], seen[0][2])


def _conference(call_id: int, event: str, call_sid: str = "") -> dict[str, str]:
    params = {
        "ConferenceSid": new_sid("CF"),
        "StatusCallbackEvent": event,
        "SequenceNumber": "1",
        "AccountSid": "AC1",
    }
    if call_sid:
        params["CallSid"] = call_sid
    return params


async def test_forged_replayed_and_malformed_call_webhooks_are_refused(
    bridge: RunningBridge, twilio: TwilioServer
) -> None:
    await available(bridge, "alice")
    caller = await twilio.dial_in("+447700900321", CENTRE)
    leg = await ringing(twilio, ALICE_PHONE)
    status_url = leg.status_callback or ""
    assert status_url.startswith(bridge.url + "/twilio/calls/status?leg=")
    answered = {
        "AccountSid": twilio.account_sid,
        "CallSid": leg.sid,
        "CallStatus": "in-progress",
        "To": ALICE_PHONE,
    }

    unsigned = await twilio.post_webhook(status_url, answered, signature=None)
    assert unsigned.status == 403 and "missing_signature" in unsigned.text
    forged = await twilio.post_webhook(status_url, answered, signature="bm90IGEgc2lnbmF0dXJl")
    assert forged.status == 403 and "bad_signature" in forged.text
    other_leg = status_url.replace("leg=", "leg=9")
    moved = await twilio.post_webhook(other_leg, answered, signature=twilio.sign(status_url, answered))
    assert moved.status == 403, "the query string is signed: another leg's URL is refused"
    tampered = await twilio.post_webhook(
        status_url, {**answered, "CallStatus": "busy"}, signature=twilio.sign(status_url, answered)
    )
    assert tampered.status == 403
    alert_id = (await bridge.call("GET", "/api/v1/calls", user="alice"))[1]["calls"][0]["alert_id"]
    assert "call_answered" not in await call_actions(bridge, alert_id), "nothing refused was acted on"

    genuine = await twilio.post_signed(status_url, answered)
    assert genuine.status == 200 and genuine.content_type == "application/xml"
    assert "call_answered" in await call_actions(bridge, alert_id)
    replayed = await twilio.post_signed(status_url, answered)
    assert replayed.status == 403 and "replayed" in replayed.text
    assert (await call_actions(bridge, alert_id)).count("call_answered") == 1

    conference = bridge.url + "/twilio/calls/conference?call=1"
    recording = bridge.url + "/twilio/calls/recording?call=1"
    malformed: list[tuple[str, Mapping[str, str]]] = [
        (bridge.url + "/twilio/calls/status", answered),  # no leg in the URL
        (bridge.url + "/twilio/calls/status?leg=abc", answered),
        (bridge.url + "/twilio/calls/status?leg=-1", answered),
        (status_url, {**answered, "CallSid": "CA-not-a-sid"}),
        (status_url, {**answered, "CallStatus": ""}),
        (status_url, {**answered, "CallStatus": "in progress <b>"}),
        (status_url, {**answered, "ErrorCode": "lots"}),
        (conference, _conference(1, "participant-teleported", leg.sid)),
        (conference, _conference(1, "participant-join")),  # a participant event names its call
        (conference, {**_conference(1, "participant-join", leg.sid), "ConferenceSid": "CF123"}),
        (conference, {**_conference(1, "participant-join", leg.sid), "ParticipantLabel": "x" * 200}),
        (conference, {**_conference(1, "participant-join", leg.sid), "SequenceNumber": "one"}),
        (bridge.url + "/twilio/calls/conference?call=" + "9" * 30, _conference(1, "conference-end")),
        (recording, {"RecordingSid": "RE1", "RecordingStatus": "completed"}),
        (
            recording,
            {"RecordingSid": new_sid("RE"), "RecordingStatus": "completed", "RecordingDuration": "-4"},
        ),
        (
            recording,
            {"RecordingSid": new_sid("RE"), "RecordingStatus": "completed", "RecordingChannels": "3"},
        ),
        (
            recording,
            {"RecordingSid": new_sid("RE"), "RecordingStatus": "completed", "RecordingDuration": "9" * 40},
        ),
        (
            recording,
            {"RecordingSid": new_sid("RE"), "RecordingStatus": "completed", "RecordingUrl": "h" * 600},
        ),
    ]
    for url, params in malformed:
        answer = await twilio.post_signed(url, params)
        assert answer.status == 400 and "malformed_webhook" in answer.text, (url, params, answer)
    big = await twilio.post_signed(conference, {**_conference(1, "conference-end"), "Junk": "x" * 70_000})
    assert big.status in (403, 413)

    # Signed, well-formed, but about nothing we know: answered, and nothing happens.
    stray = await twilio.post_signed(
        bridge.url + "/twilio/calls/status?leg=999", {**answered, "CallSid": new_sid("CA")}
    )
    assert stray.status == 200
    nowhere = await twilio.post_signed(
        bridge.url + "/twilio/calls/recording?call=999",
        {"RecordingSid": new_sid("RE"), "RecordingStatus": "completed", "RecordingDuration": "3"},
    )
    assert nowhere.status == 200

    # A replayed inbound call is refused too (and made no second call).
    inbound = {"AccountSid": twilio.account_sid, "CallSid": caller.sid, "From": caller.from_, "To": CENTRE,
               "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    again = await twilio.post_signed(bridge.url + "/twilio/voice", inbound)
    assert again.status == 403 and "replayed" in again.text
    assert len((await bridge.call("GET", "/api/v1/calls", user="alice"))[1]["calls"]) == 1
    status, body = await bridge.call("GET", "/metrics", user=None)
    assert 'telecare_call_webhooks_total{result="refused_403",route="status"} 5.0' in body
    await twilio.hang_up(caller.sid)


async def test_call_routes_answer_404_while_telephony_is_off(tmp_path: Path, twilio: TwilioServer) -> None:
    from escalation_support import twilio_config

    async with running_bridge(twilio_config(tmp_path, twilio)) as bridge:
        for route in ("status?leg=1", "conference?call=1", "recording?call=1"):
            answer = await twilio.post_signed(
                bridge.url + f"/twilio/calls/{route}", {"CallSid": new_sid("CA")}
            )
            assert answer.status == 404, route
        # /twilio/voice keeps its old answer for a call in: a neutral goodbye, nothing recorded.
        inbound = {"CallSid": new_sid("CA"), "From": "+447700900123", "To": CENTRE, "Direction": "inbound"}
        answer = await twilio.post_signed(bridge.url + "/twilio/voice", inbound)
        assert answer.status == 200 and "Goodbye" in answer.text and "<Conference" not in answer.text
        for method, path in (("GET", "/api/v1/calls"), ("GET", "/api/v1/telephony/presence")):
            status, body = await bridge.call(method, path, user="alice")
            assert status == 404 and "telephony is not enabled" in body["detail"], body


TEXT = st.text(max_size=40)
KNOWN_VALUES = [new_sid("CA"), new_sid("CF"), new_sid("RE"), "participant-join", "completed", "0", "1"]


@settings(max_examples=300, deadline=None)
@given(
    query=st.dictionaries(st.sampled_from(["leg", "call", "x"]), TEXT, max_size=3),
    params=st.dictionaries(
        st.sampled_from(
            ["CallSid", "CallStatus", "ErrorCode", "ConferenceSid", "StatusCallbackEvent", "ParticipantLabel",
             "SequenceNumber", "RecordingSid", "RecordingStatus", "RecordingDuration", "RecordingChannels",
             "RecordingUrl"]
        ),
        st.one_of(TEXT, st.sampled_from(KNOWN_VALUES)),
    ),
)  # fmt: skip
def test_the_webhook_readers_answer_a_value_or_a_refusal(
    query: dict[str, str], params: dict[str, str]
) -> None:
    """Whatever a signed webhook holds, reading it gives a value or a 400 refusal: never another error."""
    for reader in (parse_leg_status, parse_conference_event, parse_recording):
        try:
            value: Any = reader(query)(params)
        except WebhookRejected as exc:
            assert exc.status == 400 and exc.error == "malformed_webhook"
        else:
            assert value.replay_key and all(isinstance(part, str) for part in value.replay_key)


async def test_a_webhook_that_fails_to_act_is_released_for_twilios_retry(
    bridge: RunningBridge, twilio: TwilioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails while a status is handled: 500, and Twilio's retry of the same webhook is taken."""
    from alarm_centre.telephony.calls import Telephony

    await available(bridge, "alice")
    caller = await twilio.dial_in("+447700900321", CENTRE)
    leg = await ringing(twilio, ALICE_PHONE)
    original = Telephony.on_leg_status
    failures = [RuntimeError("the store is down")]

    async def failing(self: Telephony, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await original(self, **kwargs)

    monkeypatch.setattr(Telephony, "on_leg_status", failing)
    answered = {"AccountSid": twilio.account_sid, "CallSid": leg.sid, "CallStatus": "in-progress"}
    first = await twilio.post_signed(leg.status_callback or "", answered)
    assert first.status == 500
    retry = await twilio.post_signed(leg.status_callback or "", answered)
    assert retry.status == 200
    [call] = (await bridge.call("GET", "/api/v1/calls", user="alice"))[1]["calls"]
    assert call["state"] == "connected" and "call_answered" in await call_actions(bridge, call["alert_id"])
    await twilio.hang_up(caller.sid)
