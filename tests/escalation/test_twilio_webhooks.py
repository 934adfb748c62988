"""Inbound Twilio webhooks: signed by the local Twilio server, received by a real aiohttp app on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession, web
from twilio.request_validator import RequestValidator

from alarm_centre.escalation.notify import Notifier
from alarm_centre.escalation.twilio import (
    DeliveryStatus,
    GatherInput,
    InboundSms,
    ReplayGuard,
    Reply,
    WebhookRejected,
    parse_digits,
    parse_gather,
    parse_inbound_sms,
    parse_reply_text,
    parse_status,
    read_verified_webhook,
    sms_reply_twiml,
    twiml_response,
    voice_say_twiml,
)
from simulators.twilio_server import DEMO_AUTH_TOKEN, TwilioServer

RESPONDER = "+447700900123"
OUR_NUMBER = "+441632960000"


@dataclass
class BridgeStub:
    """The three webhook routes as the integrator mounts them, recording what they accepted."""

    public_url: str = ""  # empty: the address it listens on
    received: list[InboundSms | GatherInput | DeliveryStatus] = field(default_factory=list)
    store_down: int = 0  # fail this many handlings, as if the store could not commit
    url: str = ""
    guard: ReplayGuard = field(default_factory=ReplayGuard)

    def app(self) -> web.Application:
        validator = RequestValidator(DEMO_AUTH_TOKEN)

        def route(parse: Callable[[Mapping[str, str]], Any], answer: Callable[[Any], str]) -> Any:
            async def handler(request: web.Request) -> web.Response:
                value = await read_verified_webhook(
                    request, validator, self.public_url or self.url, parse, self.guard
                )
                if self.store_down:
                    self.store_down -= 1
                    self.guard.release(value.replay_key)
                    raise web.HTTPServiceUnavailable(text='{"error": "store_unavailable", "detail": ""}')
                self.received.append(value)
                return twiml_response(answer(value))

            return handler

        app = web.Application()
        app.router.add_post("/twilio/sms", route(parse_inbound_sms, lambda v: sms_reply_twiml("Thank you")))
        app.router.add_post(
            "/twilio/voice", route(parse_gather, lambda v: voice_say_twiml(f"You have {v.reply.value}ed."))
        )
        app.router.add_post("/twilio/status", route(parse_status, lambda v: "<Response/>"))
        return app


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


async def start_bridge(stub: BridgeStub) -> web.AppRunner:
    runner = web.AppRunner(stub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def bridge() -> AsyncIterator[BridgeStub]:
    stub = BridgeStub()
    runner = await start_bridge(stub)
    yield stub
    await runner.cleanup()


def error_of(text: str) -> str:
    body = json.loads(text)
    assert set(body) == {"error", "detail"}
    return str(body["error"])


def sms_params(body: str = "YES") -> dict[str, str]:
    return {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": RESPONDER,
        "To": OUR_NUMBER,
        "Body": body,
    }


# --- genuine webhooks ---------------------------------------------------------------------------


async def test_genuine_sms_yes_is_accepted(twilio: TwilioServer, bridge: BridgeStub) -> None:
    answer = await twilio.reply_sms(
        bridge.url + "/twilio/sms", RESPONDER, "Yes, on my way", to_number=OUR_NUMBER
    )

    assert answer.status == 200
    assert answer.content_type == "application/xml"
    assert "<Message>Thank you</Message>" in answer.text
    [sms] = bridge.received
    assert isinstance(sms, InboundSms)
    assert (sms.from_number, sms.to_number, sms.reply) == (RESPONDER, OUR_NUMBER, Reply.ACCEPT)
    assert sms.message_sid.startswith("SM")


async def test_pressing_1_on_a_placed_call_accepts(twilio: TwilioServer, bridge: BridgeStub) -> None:
    notifier = Notifier(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number=OUR_NUMBER,
        api_base_url=twilio.base_url,
    )
    async with notifier:
        sent = await notifier.place_call(
            to=RESPONDER, text="Fall alarm for Mrs Jones", gather_action=bridge.url + "/twilio/voice"
        )
    async with asyncio.timeout(5):
        call = await twilio.next_call()
    assert call.gather_action is not None

    answer = await twilio.press_digits(call.gather_action, sent.sid, "1")

    assert answer.status == 200
    assert "You have accepted" in answer.text and "<Hangup" in answer.text
    [gather] = bridge.received
    assert isinstance(gather, GatherInput)
    assert (gather.call_sid, gather.digits, gather.reply) == (sent.sid, "1", Reply.ACCEPT)
    assert gather.responder == RESPONDER


async def test_status_callbacks_are_parsed(twilio: TwilioServer, bridge: BridgeStub) -> None:
    notifier = Notifier(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number=OUR_NUMBER,
        api_base_url=twilio.base_url,
    )
    async with notifier:
        sent = await notifier.send_sms(
            to=RESPONDER, body="Alert", status_callback=bridge.url + "/twilio/status"
        )
    async with asyncio.timeout(5):
        message = await twilio.next_message()
    assert message.status_callback is not None

    first = await twilio.send_status(message.status_callback, sent.sid, "sent")
    second = await twilio.send_status(message.status_callback, sent.sid, "undelivered", error_code=30003)

    assert (first.status, second.status) == (200, 200)
    assert bridge.received == [
        DeliveryStatus(sid=sent.sid, kind="sms", status="sent", error_code=None, to_number=RESPONDER),
        DeliveryStatus(sid=sent.sid, kind="sms", status="undelivered", error_code=30003, to_number=RESPONDER),
    ]
    last = bridge.received[1]
    assert isinstance(last, DeliveryStatus) and last.final and last.failed


async def test_signature_is_checked_against_the_public_url(twilio: TwilioServer) -> None:
    stub = BridgeStub(public_url="https://bridge.example.org")
    runner = await start_bridge(stub)
    try:
        params = sms_params()
        # Twilio signs the URL it was given (the public one), then the proxy forwards it to us.
        public = await twilio.post_webhook(
            stub.url + "/twilio/sms",
            params,
            signature=twilio.sign("https://bridge.example.org/twilio/sms", params),
        )
        # Signed for the address we happen to listen on: not what Twilio would sign.
        local = await twilio.post_webhook(
            stub.url + "/twilio/sms",
            params | {"MessageSid": "SM" + "b" * 32},
            signature=twilio.sign(stub.url + "/twilio/sms", params | {"MessageSid": "SM" + "b" * 32}),
        )
    finally:
        await runner.cleanup()

    assert public.status == 200
    assert local.status == 403 and error_of(local.text) == "bad_signature"
    assert len(stub.received) == 1


# --- forged, replayed and malformed -------------------------------------------------------------


async def test_a_webhook_signed_with_another_token_is_refused(bridge: BridgeStub) -> None:
    async with TwilioServer(auth_token="somebody-elses-token") as impostor:
        answer = await impostor.reply_sms(bridge.url + "/twilio/sms", RESPONDER, "YES")

    assert answer.status == 403
    assert answer.content_type == "application/json"
    assert error_of(answer.text) == "bad_signature"
    assert bridge.received == []


async def test_a_tampered_parameter_is_refused(twilio: TwilioServer, bridge: BridgeStub) -> None:
    url = bridge.url + "/twilio/sms"
    signature = twilio.sign(url, sms_params("NO"))

    answer = await twilio.post_webhook(url, sms_params("YES"), signature=signature)

    assert answer.status == 403 and error_of(answer.text) == "bad_signature"
    assert bridge.received == []


async def test_a_signature_for_another_url_is_refused(twilio: TwilioServer, bridge: BridgeStub) -> None:
    params = {"CallSid": "CA" + "c" * 32, "Digits": "1", "From": OUR_NUMBER, "To": RESPONDER}
    signature = twilio.sign(bridge.url + "/twilio/status", params)

    answer = await twilio.post_webhook(bridge.url + "/twilio/voice", params, signature=signature)

    assert answer.status == 403 and error_of(answer.text) == "bad_signature"
    assert bridge.received == []


async def test_a_missing_signature_is_refused(twilio: TwilioServer, bridge: BridgeStub) -> None:
    answer = await twilio.post_webhook(bridge.url + "/twilio/sms", sms_params(), signature=None)

    assert answer.status == 403 and error_of(answer.text) == "missing_signature"
    assert bridge.received == []


async def test_an_exact_replay_is_refused(twilio: TwilioServer, bridge: BridgeStub) -> None:
    url = bridge.url + "/twilio/voice"
    params = {"CallSid": "CA" + "d" * 32, "Digits": "1", "From": OUR_NUMBER, "To": RESPONDER}

    first = await twilio.post_signed(url, params)
    again = await twilio.post_signed(url, params)

    assert first.status == 200
    assert again.status == 403 and error_of(again.text) == "replayed"
    assert len(bridge.received) == 1


async def test_a_retry_after_a_failed_handling_is_let_through(
    twilio: TwilioServer, bridge: BridgeStub
) -> None:
    bridge.store_down = 1
    url = bridge.url + "/twilio/sms"

    first = await twilio.post_signed(url, sms_params())
    retry = await twilio.post_signed(url, sms_params())

    assert (first.status, retry.status) == (503, 200)
    assert len(bridge.received) == 1


async def test_a_signed_but_malformed_webhook_is_a_400(twilio: TwilioServer, bridge: BridgeStub) -> None:
    params = sms_params()
    del params["MessageSid"]

    answer = await twilio.post_signed(bridge.url + "/twilio/sms", params)

    assert answer.status == 400 and error_of(answer.text) == "malformed_webhook"
    assert bridge.received == []


# --- the pure core ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("YES", Reply.ACCEPT),
        ("yes", Reply.ACCEPT),
        (" Y ", Reply.ACCEPT),
        ("Accept", Reply.ACCEPT),
        ("ok.", Reply.ACCEPT),
        ("Yes, I'm on my way", Reply.ACCEPT),
        ("NO", Reply.DECLINE),
        ("no sorry", Reply.DECLINE),
        ("decline", Reply.DECLINE),
        ("Not sure", Reply.UNKNOWN),
        ("yesterday", Reply.UNKNOWN),
        ("", Reply.UNKNOWN),
        ("👍", Reply.UNKNOWN),
    ],
)
def test_reply_text(text: str, reply: Reply) -> None:
    assert parse_reply_text(text) is reply


@pytest.mark.parametrize(
    ("digits", "reply"),
    [("1", Reply.ACCEPT), ("2", Reply.DECLINE), ("9", Reply.UNKNOWN), ("", Reply.UNKNOWN)],
)
def test_digits(digits: str, reply: Reply) -> None:
    assert parse_digits(digits) is reply


def test_call_status_no_answer_is_final_and_failed() -> None:
    status = parse_status({"CallSid": "CA" + "e" * 32, "CallStatus": "no-answer", "To": RESPONDER})

    assert (status.kind, status.status, status.final, status.failed) == ("call", "no-answer", True, True)
    assert status.replay_key == ("status", "CA" + "e" * 32, "no-answer")


@pytest.mark.parametrize(
    ("parse", "params", "detail"),
    [
        (parse_inbound_sms, {"From": RESPONDER, "Body": "YES"}, "MessageSid is required"),
        (parse_inbound_sms, {"MessageSid": "CA" + "0" * 32, "From": RESPONDER}, "MessageSid is not"),
        (parse_inbound_sms, {"MessageSid": "SM" + "0" * 32, "Body": "YES"}, "From is required"),
        (parse_gather, {"CallSid": "CA" + "0" * 32, "Digits": "1<script>"}, "Digits"),
        (parse_status, {"MessageSid": "SM" + "0" * 32}, "MessageStatus or CallStatus"),
        (parse_status, {"CallSid": "CA" + "0" * 32, "CallStatus": "failed", "ErrorCode": "x"}, "ErrorCode"),
    ],
)
def test_malformed_fields_are_named(
    parse: Callable[[Mapping[str, str]], object], params: dict[str, str], detail: str
) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse(params)
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_replay_guard_forgets_after_its_window() -> None:
    now = [1000.0]
    guard = ReplayGuard(window=60, clock=lambda: now[0])
    guard.claim(("sms", "SM1"))

    with pytest.raises(WebhookRejected) as caught:
        guard.claim(("sms", "SM1"))
    assert (caught.value.error, caught.value.status) == ("replayed", 403)

    now[0] += 61
    guard.claim(("sms", "SM1"))  # outside the window: accepted again
    assert len(guard) == 1


def test_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(max_entries=3)
    for n in range(5):
        guard.claim(("status", f"SM{n}", "sent"))

    assert len(guard) == 3
    guard.claim(("status", "SM0", "sent"))  # the oldest were forgotten
    with pytest.raises(WebhookRejected):
        guard.claim(("status", "SM4", "sent"))


# --- the simulator's control API, as the demo uses it -------------------------------------------


async def test_the_demo_control_api_sends_signed_webhooks(twilio: TwilioServer, bridge: BridgeStub) -> None:
    notifier = Notifier(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number=OUR_NUMBER,
        api_base_url=twilio.base_url,
    )
    async with notifier:
        call = await notifier.place_call(
            to=RESPONDER,
            text="CO alarm",
            gather_action=bridge.url + "/twilio/voice",
            status_callback=bridge.url + "/twilio/status",
        )
    async with ClientSession() as http:
        async with http.post(
            twilio.base_url + "/_simulator/digits", json={"call_sid": call.sid, "digits": "1"}
        ) as resp:
            pressed = await resp.json()
        async with http.post(
            twilio.base_url + "/_simulator/status", json={"sid": call.sid, "status": "completed"}
        ) as resp:
            completed = await resp.json()
        async with http.post(twilio.base_url + "/_simulator/digits", json={"digits": "1"}) as resp:
            missing = resp.status

    assert pressed["status"] == 200 and "accepted" in pressed["text"]
    assert completed["status"] == 200
    assert missing == 400
    gather, status = bridge.received
    assert isinstance(gather, GatherInput) and gather.reply is Reply.ACCEPT
    assert isinstance(status, DeliveryStatus) and (status.kind, status.status) == ("call", "completed")
