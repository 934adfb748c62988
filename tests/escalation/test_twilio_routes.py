"""The bridge's /twilio/* routes: forged, unsigned, tampered and replayed webhooks refused; off: 404."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from escalation_support import SUPERVISOR, actions, raise_alert, twilio_config
from harness import eventually, running_bridge

from simulators.twilio_server import TwilioServer, new_sid


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def test_forged_and_replayed_webhooks_are_refused(tmp_path: Path, twilio: TwilioServer) -> None:
    policy = {"1": [{"after_s": 0.2, "action": "call"}]}
    async with running_bridge(twilio_config(tmp_path, twilio, policies=policy)) as bridge:
        alert_id = await raise_alert(bridge, "unit-tw-1")
        async with asyncio.timeout(10):
            call = await twilio.next_call()
        voice = bridge.url + "/twilio/voice"
        params = {
            "AccountSid": twilio.account_sid,
            "CallSid": call.sid,
            "Digits": "1",
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

        unsigned = await twilio.post_webhook(voice, params, signature=None)
        assert unsigned.status == 403 and "missing_signature" in unsigned.text
        forged = await twilio.post_webhook(voice, params, signature="bm90IGEgc2lnbmF0dXJl")
        assert forged.status == 403 and "bad_signature" in forged.text
        tampered = await twilio.post_webhook(
            voice, {**params, "Digits": "2"}, signature=twilio.sign(voice, params)
        )
        assert tampered.status == 403
        other_url = await twilio.post_webhook(voice, params, signature=twilio.sign(bridge.url + "/x", params))
        assert other_url.status == 403
        assert "supervisor_replied" not in await actions(bridge, alert_id), "nothing refused was acted on"

        genuine = await twilio.post_signed(voice, params)
        assert genuine.status == 200 and genuine.content_type == "application/xml"
        replayed = await twilio.post_signed(voice, params)
        assert replayed.status == 403 and "replayed" in replayed.text
        assert (await actions(bridge, alert_id)).count("supervisor_replied") == 1

        # malformed but signed: 400, not acted on
        bad = {"AccountSid": twilio.account_sid, "CallSid": "nope", "Digits": "1"}
        malformed = await twilio.post_signed(voice, bad)
        assert malformed.status == 400

        status, body = await bridge.call("GET", "/metrics", user=None)
        assert 'telecare_twilio_webhooks_total{result="refused_403",route="voice"} 5.0' in body


async def test_status_callback_is_recorded_and_unknown_sids_ignored(
    tmp_path: Path, twilio: TwilioServer
) -> None:
    policy = {"1": [{"after_s": 0.2, "action": "sms"}]}
    async with running_bridge(twilio_config(tmp_path, twilio, policies=policy)) as bridge:
        alert_id = await raise_alert(bridge, "unit-tw-2")
        async with asyncio.timeout(10):
            message = await twilio.next_message()
        assert message.to == SUPERVISOR and message.status_callback == bridge.url + "/twilio/status"

        async def sent() -> bool:
            return "notification_sent" in await actions(bridge, alert_id)

        await eventually(sent)
        answer = await twilio.send_status(message.status_callback or "", message.sid, "delivered")
        assert answer.status == 200
        assert "notification_status" in await actions(bridge, alert_id)
        stray = await twilio.send_status(bridge.url + "/twilio/status", new_sid("SM"), "delivered")
        assert stray.status == 200
        nobody = await twilio.reply_sms(bridge.url + "/twilio/sms", "+447700900999", "YES")
        assert nobody.status == 200 and "<Message>" not in nobody.text


async def test_twilio_disabled_sends_nothing_and_routes_are_404(tmp_path: Path, twilio: TwilioServer) -> None:
    policy = {"1": [{"after_s": 0.2, "action": "sms"}, {"after_s": 0.3, "action": "call"}]}
    async with running_bridge(twilio_config(tmp_path, None, policies=policy)) as bridge:
        alert_id = await raise_alert(bridge, "unit-tw-3")
        for route in ("sms", "voice", "status"):
            answer = await twilio.post_signed(bridge.url + f"/twilio/{route}", {"MessageSid": new_sid("SM")})
            assert answer.status == 404

        async def skipped() -> bool:
            return (await actions(bridge, alert_id)).count("escalation_skipped") == 2

        await eventually(skipped)
        assert twilio.attempts == []
