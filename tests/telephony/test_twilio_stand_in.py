"""The Twilio stand-in's phone network on its own: its REST answers (call updates, recordings fetched and
deleted, with Basic auth), its demo control API (and the refusals of bad input there), and conferences
that start, end and are recorded as Twilio's do. The bridge is not involved: a small receiver plays it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from simulators.twilio_server import TwilioServer
from simulators.twilio_voice import SILENT_MP3, SILENT_WAV

ROOM = (
    '<Response><Dial><Conference statusCallback="{base}/events" statusCallbackEvent="start end join leave" '
    'record="record-from-start" recordingStatusCallback="{base}/rec" startConferenceOnEnter="{start}" '
    'endConferenceOnExit="{end}">room</Conference></Dial></Response>'
)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in for the bridge: records each webhook; answers the voice URL with a conference."""
    seen: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append({"path": request.path, **form})
        base = f"http://127.0.0.1:{request.url.port}"
        if request.path == "/voice":
            return web.Response(
                text=ROOM.format(base=base, start="false", end="true"), content_type="text/xml"
            )
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def control(twilio: TwilioServer, path: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{twilio.base_url}/_simulator/{path}", json=body) as r,
    ):
        return r.status, await r.json(content_type=None)


async def test_a_call_in_waits_then_a_call_out_joins_and_the_recording_is_reported(
    receiver: tuple[str, list[dict[str, str]]],
) -> None:
    base, seen = receiver
    async with TwilioServer() as twilio:
        status, body = await control(
            twilio, "numbers", {"number": "+441632960001", "voice_url": base + "/voice"}
        )
        assert status == 200 and body["numbers"]["+441632960001"] == base + "/voice"
        status, caller = await control(twilio, "dial_in", {"from": "+447700900123", "to": "+441632960001"})
        assert status == 200 and caller["status"] == "in-progress" and caller["conference"] == "room"
        room = twilio.voice.conferences["room"]
        assert room.status == "init", "the caller alone does not start it"
        # a call out through the REST API, whose TwiML joins the same conference and starts it
        auth = aiohttp.BasicAuth(twilio.account_sid, twilio.auth_token)
        url = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Calls.json"
        twiml = ROOM.format(base=base, start="true", end="false")
        form = {
            "To": "+447700900111",
            "From": "+441632960001",
            "Twiml": twiml,
            "StatusCallback": base + "/status",
        }
        async with aiohttp.ClientSession(auth=auth) as http:
            async with http.post(url, data=[*form.items(), ("StatusCallbackEvent", "answered"),
                                           ("StatusCallbackEvent", "completed")]) as resp:  # fmt: skip
                assert resp.status == 201
                leg = (await resp.json())["sid"]
            status, answered = await control(twilio, "answer", {"call_sid": leg})
            assert status == 200 and answered["status"] == "in-progress" and room.status == "in-progress"
            status, _ = await control(twilio, "hang_up", {"call_sid": caller["sid"]})
            assert status == 200 and room.status == "completed"
            assert twilio.voice.calls[leg].status == "completed", "everyone left is hung up with it"
            [rec] = twilio.voice.recordings.values()
            rec_url = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings/{rec.sid}"
            async with http.get(rec_url + ".mp3") as resp:
                assert (
                    resp.status == 200
                    and resp.content_type == "audio/mpeg"
                    and await resp.read() == SILENT_MP3
                )
            async with http.get(rec_url + ".wav") as resp:
                assert await resp.read() == SILENT_WAV
            async with http.get(rec_url + ".json") as resp:
                assert (await resp.json())["conference_sid"] == room.sid
            async with http.delete(rec_url + ".json") as resp:
                assert resp.status == 204
            async with http.delete(rec_url + ".json") as resp:
                assert resp.status == 404
        async with aiohttp.ClientSession() as http, http.get(rec_url + ".mp3") as resp:
            assert resp.status == 401, "no audio without the account's credentials"
    events = [
        (s["path"], s.get("StatusCallbackEvent") or s.get("CallStatus") or s.get("RecordingStatus"))
        for s in seen
    ]
    assert events == [
        ("/voice", "ringing"),
        ("/events", "participant-join"),
        ("/status", "in-progress"),
        ("/events", "participant-join"),
        ("/events", "conference-start"),
        ("/events", "participant-leave"),
        ("/events", "participant-leave"),
        ("/status", "completed"),
        ("/events", "conference-end"),
        ("/rec", "completed"),
    ]
    labels = {
        s["CallSid"]: s.get("EndConferenceOnExit")
        for s in seen
        if s.get("StatusCallbackEvent") == "participant-join"
    }
    assert labels == {caller["sid"]: "true", leg: "false"}


async def test_ringing_calls_are_stopped_by_a_rest_update_and_bad_controls_refused() -> None:
    async with TwilioServer() as twilio:
        auth = aiohttp.BasicAuth(twilio.account_sid, twilio.auth_token)
        base = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Calls"
        async with aiohttp.ClientSession(auth=auth) as http:
            async with http.post(
                base + ".json", data={"To": "client:op_x", "From": "+441632960001", "Twiml": "<Response/>"}
            ) as r:
                sid = (await r.json())["sid"]
            async with http.post(
                base + ".json", data={"To": "999", "From": "+441632960001", "Twiml": "<Response/>"}
            ) as r:
                assert r.status == 201, "an emergency number is callable (Emergency Calling)"
            async with http.post(f"{base}/{sid}.json", data={"Status": "canceled"}) as r:
                assert r.status == 200 and (await r.json())["status"] == "canceled"
            async with http.post(f"{base}/{sid}.json", data={"Status": "paused"}) as r:
                assert r.status == 400
            async with http.post(f"{base}/CA{'0' * 32}.json", data={"Status": "canceled"}) as r:
                assert r.status == 404
        await twilio.settled()
        assert twilio.voice.calls[sid].status == "canceled"
        for path, body in [
            ("dial_in", {"from": "+447700900123", "to": "+441632960009"}),  # no voice URL for that number
            ("dial_in", {"from": "+447700900123"}),
            ("answer", {"call_sid": sid}),  # not ringing any more
            ("answer", {"call_sid": "CA-nope"}),
            ("refuse", {"call_sid": sid, "status": "exploded"}),
            ("hang_up", {}),
            ("numbers", {"number": "+441632960001"}),
            ("answer", ["not", "an", "object"]),
        ]:
            status, answer = await control(twilio, path, body)
            assert status == 400, (path, body, answer)
        async with aiohttp.ClientSession() as http, http.get(f"{twilio.base_url}/_simulator/voice") as r:
            listing = await r.json()
        assert [c["status"] for c in listing["calls"]] == ["canceled", "ringing"]
