"""Notifier against the local Twilio-compatible server, through the real twilio async client on loopback."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from alarm_centre.escalation.notify import DeliveryFailed, Notifier, SentMessage, build_call_twiml
from simulators.twilio_server import TwilioServer

OUR_NUMBER = "+441632960000"
RESPONDER = "+447700900123"
STATUS_URL = "https://bridge.example.org/twilio/status"
VOICE_URL = "https://bridge.example.org/twilio/voice"


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


def make_notifier(server: TwilioServer, **overrides: object) -> Notifier:
    options: dict[str, object] = {
        "account_sid": server.account_sid,
        "auth_token": server.auth_token,
        "from_number": OUR_NUMBER,
        "api_base_url": server.base_url,
        "request_timeout": 2.0,
        "max_attempts": 3,
        "backoff": 0.01,
        "max_backoff": 0.05,
    }
    options.update(overrides)
    return Notifier(**options)  # type: ignore[arg-type]


@pytest.fixture
async def notifier(twilio: TwilioServer) -> AsyncIterator[Notifier]:
    async with make_notifier(twilio) as n:
        yield n


async def test_sms_is_sent_and_recorded(twilio: TwilioServer, notifier: Notifier) -> None:
    sent = await notifier.send_sms(
        to=RESPONDER, body="Fall at 3 Acacia Avenue. Reply YES", status_callback=STATUS_URL
    )

    async with asyncio.timeout(5):
        message = await twilio.next_message()
    assert sent == SentMessage(sid=message.sid, to=RESPONDER, status="queued", kind="sms", attempts=1)
    assert sent.sid.startswith("SM") and len(sent.sid) == 34
    assert (message.to, message.from_, message.body) == (
        RESPONDER,
        OUR_NUMBER,
        "Fall at 3 Acacia Avenue. Reply YES",
    )
    assert message.status_callback == STATUS_URL
    assert twilio.calls == []


async def test_call_carries_say_inside_gather(twilio: TwilioServer, notifier: Notifier) -> None:
    sent = await notifier.place_call(
        to=RESPONDER,
        text="Smoke alarm at 3 Acacia Avenue",
        gather_action=VOICE_URL,
        status_callback=STATUS_URL,
    )

    async with asyncio.timeout(5):
        call = await twilio.next_call()
    assert sent.sid == call.sid and sent.sid.startswith("CA") and sent.kind == "call"
    assert (call.to, call.from_) == (RESPONDER, OUR_NUMBER)
    assert call.status_callback == STATUS_URL
    assert call.params["StatusCallbackEvent"] in {"answered", "completed"}  # a repeated field, one shown
    assert call.twiml is not None
    root = ET.fromstring(call.twiml)
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == VOICE_URL
    says = [say.text or "" for say in gather.iter("Say")]
    assert says and all("Smoke alarm at 3 Acacia Avenue." in s and "Press 1 to accept" in s for s in says)
    assert call.gather_action == VOICE_URL
    assert root.find("Hangup") is not None


async def test_retry_after_a_500_then_success(twilio: TwilioServer, notifier: Notifier) -> None:
    twilio.fail_next(1, status=500)

    sent = await notifier.send_sms(to=RESPONDER, body="retry me")

    assert sent.attempts == 2
    assert [a.status for a in twilio.attempts] == [500, 201]
    assert [m.body for m in twilio.messages] == ["retry me"]
    assert twilio.messages[0].sid == sent.sid


async def test_a_400_is_not_retried(twilio: TwilioServer, notifier: Notifier) -> None:
    twilio.fail_next(1, status=400, code=21610, message="Attempt to send to unsubscribed recipient")

    with pytest.raises(DeliveryFailed) as caught:
        await notifier.send_sms(to=RESPONDER, body="never sent")

    failure = caught.value
    assert failure.retryable is False
    assert (failure.status, failure.code, failure.attempts) == (400, 21610, 1)
    assert "unsubscribed" in failure.reason
    assert [a.status for a in twilio.attempts] == [400]
    assert twilio.messages == []


async def test_persistent_5xx_gives_up_as_retryable(twilio: TwilioServer, notifier: Notifier) -> None:
    twilio.fail_next(10, status=503)

    with pytest.raises(DeliveryFailed) as caught:
        await notifier.place_call(to=RESPONDER, text="Pendant alarm", gather_action=VOICE_URL)

    assert caught.value.retryable is True
    assert (caught.value.status, caught.value.attempts, caught.value.kind) == (503, 3, "call")
    assert [a.status for a in twilio.attempts] == [503, 503, 503]


async def test_a_timeout_is_retried(twilio: TwilioServer) -> None:
    twilio.stall_next(1, seconds=1.5)
    async with make_notifier(twilio, request_timeout=0.3) as notifier:
        sent = await notifier.send_sms(to=RESPONDER, body="slow network")

    assert sent.attempts == 2
    async with asyncio.timeout(5):
        first = await twilio.next_message()
    assert first.body == "slow network"


async def test_wrong_credentials_fail_without_retry(twilio: TwilioServer) -> None:
    async with make_notifier(twilio, auth_token="wrong-token") as notifier:
        with pytest.raises(DeliveryFailed) as caught:
            await notifier.send_sms(to=RESPONDER, body="hello")

    assert (caught.value.status, caught.value.code, caught.value.retryable) == (401, 20003, False)
    assert twilio.messages == []


async def test_a_bad_number_is_refused_before_calling_twilio(
    twilio: TwilioServer, notifier: Notifier
) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        await notifier.send_sms(to="07700 900123", body="hello")

    assert caught.value.retryable is False
    assert caught.value.code == 21211
    assert twilio.attempts == []


async def test_an_unreachable_twilio_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    notifier = Notifier(
        account_sid="AC" + "1" * 32,
        auth_token="token",
        from_number=OUR_NUMBER,
        api_base_url=f"http://127.0.0.1:{closed_port}",
        max_attempts=2,
        backoff=0.01,
    )
    async with notifier:
        with pytest.raises(DeliveryFailed) as caught:
            await notifier.send_sms(to=RESPONDER, body="hello")

    assert caught.value.retryable is True
    assert caught.value.status is None
    assert caught.value.attempts == 2


def test_call_twiml_escapes_alert_text() -> None:
    twiml = build_call_twiml("Door exit <Flat 2> & garden", gather_action=VOICE_URL + "?alert=a1&step=3")

    root = ET.fromstring(twiml)
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("action") == VOICE_URL + "?alert=a1&step=3"
    assert "Door exit <Flat 2> & garden." in (gather.findtext("Say") or "")


def test_notifier_refuses_a_bad_from_number() -> None:
    with pytest.raises(ValueError, match="from_number"):
        Notifier(account_sid="AC1", auth_token="t", from_number="01632 960000")
