"""POST /alexa end to end: signed requests from the simulator, the real store, the unit on real Mosquitto."""
# ruff: noqa: F811  (pytest fixtures imported from voice_support are used as parameters)

from __future__ import annotations

import hashlib
from typing import Any

from harness import RunningBridge, eventually
from voice_support import (  # noqa: F401  (fixtures)
    ECHO_ID,
    RESIDENT,
    SKILL_ID,
    UNIT,
    USER_ID,
    alert_count,
    alerts,
    ca,
    cert_server,
    good_cert,
    post_raw,
    say,
    signer,
    speech,
    voice,
)

from alarm_centre.alerts.intake import StoreUnavailable
from simulators.alexa import RequestSigner, encode, intent_request, launch_request, post_utterance
from simulators.unit import SimulatedUnit
from skills import handlers
from skills.voice import Caller


async def test_trigger_help_end_to_end(voice: RunningBridge, signer: RequestSigner) -> None:
    host, port = voice.broker
    topic_root = voice.bridge.config.topic_root
    async with SimulatedUnit(UNIT, host=host, port=port, topic_root=topic_root) as unit:
        await unit.send("heartbeat", timeout=15)  # connected and subscribed to its commands
        reply = await post_utterance(
            voice.url + "/alexa",
            "trigger help",
            device_id=ECHO_ID,
            user_id=USER_ID,
            skill_id=SKILL_ID,
            signer=signer,
            session=voice.session,
        )
        said = speech(reply)
        assert handlers.ALERTED in said
        assert "999" not in said
        assert reply["response"]["shouldEndSession"] is True

        [alert] = await alerts(voice, "open")
        assert (alert["type"], alert["priority"], alert["resident_id"]) == ("voice_help", 1, RESIDENT)
        assert alert["device_id"] == "echo-ann" and alert["unregistered"] is False
        command = await unit.wait_command("call_centre", timeout=15)
        assert command["args"]["alert_id"] == alert["id"]

    status, _ = await voice.call("POST", f"/api/v1/alerts/{alert['id']}/acknowledge", user="op1")
    assert status == 200
    reply = await post_utterance(
        voice.url + "/alexa",
        "is help coming",
        device_id=ECHO_ID,
        user_id=USER_ID,
        skill_id=SKILL_ID,
        signer=signer,
        session=voice.session,
    )
    assert handlers.STATUS_ACKNOWLEDGED in speech(reply)
    _, detail = await voice.call("GET", f"/api/v1/alerts/{alert['id']}")
    raised = next(e for e in detail["timeline"] if e["action"] == "raised")
    assert raised["source"] == "voice"


async def test_status_before_and_while_waiting(voice: RunningBridge, signer: RequestSigner) -> None:
    status, reply = await say(voice, signer, "HelpStatusIntent")
    assert status == 200 and handlers.STATUS_NONE in speech(reply)
    await say(voice, signer, "TriggerHelpIntent")
    status, reply = await say(voice, signer, "HelpStatusIntent")
    assert handlers.STATUS_RAISED in speech(reply)


async def test_unlinked_echo_raises_an_unregistered_alert_with_alexa_ids(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    stranger = "amzn1.ask.device." + "ZSTRANGERECHO" * 9
    status, reply = await say(
        voice, signer, "TriggerHelpIntent", device_id=stranger, user_id="amzn1.ask.account.X"
    )
    assert status == 200
    assert "alerted the control centre" in speech(reply) and "999" not in speech(reply)
    [alert] = await alerts(voice, "open")
    assert alert["unregistered"] is True and alert["priority"] == 1 and alert["type"] == "voice_help"
    assert alert["device_id"] == "alexa-" + hashlib.sha256(stranger.encode()).hexdigest()[:16]
    assert alert["data"]["unregistered_hint"] == {
        "alexa_device_id": stranger,
        "alexa_user_id": "amzn1.ask.account.X",
    }
    # "is help coming" from the same unlinked Echo finds its alert
    _, reply = await say(voice, signer, "HelpStatusIntent", device_id=stranger)
    assert handlers.STATUS_RAISED in speech(reply)


async def test_replayed_request_is_a_duplicate_not_a_second_alert(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    body = encode(intent_request("TriggerHelpIntent", device_id=ECHO_ID, user_id=USER_ID, skill_id=SKILL_ID))
    first = await post_raw(voice, body, signer.headers(body))
    second = await post_raw(voice, body, signer.headers(body))
    assert first[0] == second[0] == 200
    assert speech(first[1]) == speech(second[1]) == f"<speak>{handlers.ALERTED}</speak>"
    [alert] = await alerts(voice)
    assert alert["repeat_count"] == 0
    assert await voice.store.event_count() == 1


async def test_long_request_id_is_hashed_and_still_deduplicated(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    long_id = "amzn1.echo-api.request." + "x" * 80
    for _ in range(2):
        status, _ = await say(voice, signer, "TriggerHelpIntent", request_id=long_id)
        assert status == 200
    assert [a["repeat_count"] for a in await alerts(voice)] == [0]
    assert Caller(ECHO_ID, USER_ID, long_id).event_id == hashlib.sha256(long_id.encode()).hexdigest()


async def test_saying_it_twice_joins_the_open_alert(voice: RunningBridge, signer: RequestSigner) -> None:
    _, first = await say(voice, signer, "TriggerHelpIntent")
    _, second = await say(voice, signer, "TriggerHelpIntent")
    assert handlers.ALERTED in speech(first)
    assert handlers.JOINED in speech(second)
    [alert] = await alerts(voice)
    assert alert["repeat_count"] == 1


async def test_cancel_is_recorded_and_the_alert_stays_open(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    _, reply = await say(voice, signer, "CancelHelpIntent")
    assert handlers.CANCEL_NONE in speech(reply)
    await say(voice, signer, "TriggerHelpIntent")
    reply_status, reply = await say(voice, signer, "CancelHelpIntent")
    assert reply_status == 200 and handlers.CANCEL_RECORDED in speech(reply)
    [alert] = await alerts(voice)
    assert alert["state"] == "raised"
    _, detail = await voice.call("GET", f"/api/v1/alerts/{alert['id']}")
    cancelled = [e for e in detail["timeline"] if e["action"] == "resident_cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["source"] == "voice"


async def test_launch_asks_do_you_need_help_and_raises_nothing(
    voice: RunningBridge, signer: RequestSigner
) -> None:
    body = encode(launch_request(device_id=ECHO_ID, user_id=USER_ID, skill_id=SKILL_ID))
    status, reply = await post_raw(voice, body, signer.headers(body))
    assert status == 200
    assert "Do you need help?" in speech(reply)
    assert reply["response"].get("shouldEndSession") is False
    assert "Do you need help?" in reply["response"]["reprompt"]["outputSpeech"]["ssml"]
    assert await alert_count(voice) == 0


async def test_every_model_intent_answers(voice: RunningBridge, signer: RequestSigner) -> None:
    expected: dict[str, str] = {
        "AMAZON.HelpIntent": "Do you need help?",
        "AMAZON.StopIntent": handlers.GOODBYE,
        "AMAZON.CancelIntent": handlers.GOODBYE,
        "AMAZON.NavigateHomeIntent": handlers.GOODBYE,
        "AMAZON.FallbackIntent": handlers.FALLBACK,
        "CheckInIntent": handlers.CHECKIN_RECORDED,
    }
    for intent, phrase in expected.items():
        status, reply = await say(voice, signer, intent)
        assert status == 200, (intent, reply)
        assert phrase in speech(reply), intent
    assert await alert_count(voice) == 0


async def test_store_unavailable_is_said_honestly(
    voice: RunningBridge, signer: RequestSigner, monkeypatch: Any
) -> None:
    async def broken(event: Any) -> Any:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(voice.bridge.intake, "submit", broken)  # inject the fault
    status, reply = await say(voice, signer, "TriggerHelpIntent")
    assert status == 200
    said = speech(reply)
    assert handlers.UNAVAILABLE in said and "alerted" not in said
    assert "pendant" in said and "999" in said


async def test_alexa_metrics_count_outcomes(voice: RunningBridge, signer: RequestSigner) -> None:
    await say(voice, signer, "TriggerHelpIntent")
    await post_raw(voice, b"{}", {"Content-Type": "application/json"})

    async def counted() -> bool:
        async with voice.session.get(voice.url + "/metrics") as resp:
            text = await resp.text()
        return (
            'telecare_alexa_requests_total{outcome="trigger_raised"} 1.0' in text
            and 'telecare_alexa_requests_total{outcome="rejected_400"} 1.0' in text
        )

    await eventually(counted, timeout=5)
