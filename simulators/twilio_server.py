"""A local Twilio-compatible server: the real twilio client, pointed at it, sends SMS and places calls here.

It speaks enough of the 2010-04-01 REST API for ``messages.create`` and ``calls.create`` (form-encoded posts,
Basic auth with the account SID and auth token, Twilio-shaped JSON answers and errors), records every message
and call in memory, can be told to fail the next requests, and sends webhooks back signed like Twilio does
(``X-Twilio-Signature``: HMAC-SHA1 of the URL and the sorted form parameters, keyed with the auth token).

Calls also ring on a small phone network (:mod:`simulators.twilio_voice`): calls in to our numbers, calls
out that are answered or not, TwiML followed into conferences, conference and recording callbacks, call
updates (stop ringing, hang up), and recordings fetched and deleted through the REST API.

Run standalone for the demo: ``python -m simulators.twilio_server --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Self

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from twilio.request_validator import RequestValidator

from devices.phone import is_e164, is_emergency_number
from simulators.twilio_voice import SILENT_MP3, SILENT_WAV, SimCall, VoiceNetwork, new_sid

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEMO_ACCOUNT_SID = "AC" + "0" * 32
DEMO_AUTH_TOKEN = "demo-auth-token"


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """One SMS the server accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One voice call the server accepted, with its TwiML (inline ``Twiml``) or its ``Url``."""

    sid: str
    account_sid: str
    to: str
    from_: str
    twiml: str | None
    url: str | None
    status_callback: str | None
    params: Mapping[str, str]

    @property
    def gather_action(self) -> str | None:
        """The ``action`` URL of the first ``<Gather>`` in the TwiML, where pressed digits are posted."""
        gather = self._twiml_root().find(".//Gather")
        return None if gather is None else gather.get("action")

    @property
    def spoken_text(self) -> list[str]:
        """Every ``<Say>`` text in document order."""
        return [say.text or "" for say in self._twiml_root().iter("Say")]

    def _twiml_root(self) -> ET.Element:
        return ET.fromstring(self.twiml) if self.twiml else ET.Element("Response")


@dataclass(frozen=True, slots=True)
class ApiAttempt:
    """One REST request as seen by the server, including the ones it failed on purpose."""

    resource: str  # "Messages" or "Calls"
    status: int


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What the bridge answered to a webhook the server sent."""

    status: int
    text: str
    content_type: str


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int
    code: int
    message: str
    stall: float = 0.0


@dataclass(slots=True)
class _Feed:
    """Recorded items plus a cursor for ``next_*``: each item is handed out once, in order."""

    items: list[Any] = field(default_factory=list)
    cursor: int = 0


class TwilioServer:
    """Twilio REST stand-in on loopback; an async context manager exposing ``base_url``.

    Point the twilio client at it with ``client.api.base_url = server.base_url``.
    """

    def __init__(
        self,
        *,
        account_sid: str = DEMO_ACCOUNT_SID,
        auth_token: str = DEMO_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._host = host
        self._port = port
        self._validator = RequestValidator(auth_token)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._changed = asyncio.Condition()
        self._messages = _Feed()
        self._calls = _Feed()
        self._faults: list[_Fault] = []
        self.attempts: list[ApiAttempt] = []
        self.base_url = ""
        #: Calls in and out, conferences and recordings (the voice side of the account).
        self.voice = VoiceNetwork(
            account_sid=account_sid, post=self._post_for_network, base_url=lambda: self.base_url, clock=clock
        )

    @property
    def messages(self) -> list[RecordedMessage]:
        return list(self._messages.items)

    @property
    def calls(self) -> list[RecordedCall]:
        return list(self._calls.items)

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[_webhook_errors])
        prefix = f"/{API_VERSION}/Accounts/{{account_sid}}"
        app.router.add_post(prefix + "/Messages.json", self._create_message)
        app.router.add_post(prefix + "/Calls.json", self._create_call)
        app.router.add_get(prefix + "/Messages/{sid}.json", self._fetch_message)
        app.router.add_get(prefix + "/Calls/{sid}.json", self._fetch_call)
        app.router.add_post(prefix + "/Calls/{sid}.json", self._update_call)
        recording = prefix + "/Recordings/{sid:RE[0-9a-fA-F]{32}}.{ext:json|mp3|wav}"
        app.router.add_get(recording, self._fetch_recording)
        app.router.add_delete(recording, self._delete_recording)
        app.router.add_get(prefix + "/Conferences.json", self._list_conferences)
        app.router.add_get("/_simulator/voice", self._list_voice)
        app.router.add_post("/_simulator/numbers", self._control_number)
        app.router.add_post("/_simulator/dial_in", self._control_dial_in)
        app.router.add_post("/_simulator/answer", self._control_answer)
        app.router.add_post("/_simulator/refuse", self._control_refuse)
        app.router.add_post("/_simulator/hang_up", self._control_hang_up)
        app.router.add_get("/_simulator/messages", self._list_messages)
        app.router.add_get("/_simulator/calls", self._list_calls)
        app.router.add_post("/_simulator/sms_reply", self._control_sms_reply)
        app.router.add_post("/_simulator/digits", self._control_digits)
        app.router.add_post("/_simulator/status", self._control_status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self._host}:{port}"
        self._session = ClientSession(timeout=ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.voice.settled()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- test controls -------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, *, status: int = 500, code: int | None = None, message: str = ""
    ) -> None:
        """Answer the next ``count`` Messages/Calls requests with ``status`` and a Twilio error body."""
        default_code = 20500 if status >= 500 else 21211
        text = message or ("Internal Server Error" if status >= 500 else "Invalid request")
        self._faults.append(_Fault(count, status, code if code is not None else default_code, text))

    def stall_next(self, count: int = 1, *, seconds: float) -> None:
        """Hold the next ``count`` requests for ``seconds`` before answering normally (to test timeouts)."""
        self._faults.append(_Fault(count, 0, 0, "", stall=seconds))

    async def next_message(self) -> RecordedMessage:
        """The next message not yet handed out, waiting for it (bound the wait with asyncio.timeout)."""
        item: RecordedMessage = await self._next(self._messages)
        return item

    async def next_call(self) -> RecordedCall:
        """The next call not yet handed out, waiting for it (bound the wait with asyncio.timeout)."""
        item: RecordedCall = await self._next(self._calls)
        return item

    async def _next(self, feed: _Feed) -> Any:
        async with self._changed:
            await self._changed.wait_for(lambda: feed.cursor < len(feed.items))
            item = feed.items[feed.cursor]
            feed.cursor += 1
            return item

    # --- signed webhooks back to the bridge ----------------------------------------------------

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """The ``X-Twilio-Signature`` Twilio would send for a POST of ``params`` to ``url``."""
        signature: str = self._validator.compute_signature(url, dict(params))
        return signature

    async def post_signed(self, to_url: str, params: Mapping[str, str]) -> WebhookResponse:
        """POST ``params`` form-encoded to ``to_url`` with a genuine signature."""
        return await self.post_webhook(to_url, params, signature=self.sign(to_url, params))

    async def post_webhook(
        self, to_url: str, params: Mapping[str, str], *, signature: str | None
    ) -> WebhookResponse:
        """POST ``params`` with the given signature (or none): also the way to send a forged one."""
        if self._session is None:
            raise RuntimeError("TwilioServer is not running")
        headers = {"User-Agent": "TwilioProxy/1.1"}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self._session.post(to_url, data=dict(params), headers=headers) as resp:
            return WebhookResponse(resp.status, await resp.text(), resp.content_type)

    async def reply_sms(
        self, to_url: str, from_number: str, body: str, *, to_number: str = ""
    ) -> WebhookResponse:
        """A responder texts ``body`` back: an inbound-SMS webhook like Twilio's."""
        sid = new_sid("SM")
        to = to_number or self._our_number_for(from_number)
        params = {
            "ToCountry": "GB",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_number,
            "ApiVersion": API_VERSION,
        }
        return await self.post_signed(to_url, params)

    async def press_digits(self, to_url: str, call_sid: str, digits: str) -> WebhookResponse:
        """The callee of ``call_sid`` presses ``digits``: the ``<Gather>`` action webhook."""
        call = self._find_call(call_sid)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call_sid,
            "CallStatus": "in-progress",
            "Called": call.to if call else "",
            "Caller": call.from_ if call else "",
            "Digits": digits,
            "Direction": "outbound-api",
            "FinishedOnKey": "",
            "From": call.from_ if call else "",
            "To": call.to if call else "",
            "msg": "Gather End",
        }
        answer = await self.post_signed(to_url, params)
        if answer.status == 200:
            await self.voice.keys_answered(call_sid, answer.text)
        return answer

    async def send_status(
        self, to_url: str, sid: str, status: str, *, error_code: int | None = None
    ) -> WebhookResponse:
        """A delivery status callback for a message (``SM…``) or call (``CA…``) sid."""
        params: dict[str, str] = {"AccountSid": self.account_sid, "ApiVersion": API_VERSION}
        if sid.startswith("CA"):
            call = self._find_call(sid)
            params |= {"CallSid": sid, "CallStatus": status, "Direction": "outbound-api"}
            if call is not None:
                params |= {"To": call.to, "From": call.from_}
            if status == "completed":
                params["CallDuration"] = "12"
        else:
            message = self._find_message(sid)
            params |= {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}
            if message is not None:
                params |= {"To": message.to, "From": message.from_}
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return await self.post_signed(to_url, params)

    # --- the voice network (calls in, answering, conferences, recordings) ------------------------

    def configure_number(self, number: str, voice_url: str) -> None:
        """Point one of our numbers at a voice URL, as the number's console page would."""
        self.voice.numbers[number] = voice_url

    async def dial_in(self, from_number: str, to_number: str, voice_url: str | None = None) -> SimCall:
        """``from_number`` calls ``to_number``: the signed voice webhook (``Direction=inbound``), then the
        TwiML the bridge answered with is followed (typically: into a conference, waiting)."""
        return await self.voice.dial_in(from_number, to_number, voice_url)

    async def answer(self, call_sid: str) -> SimCall:
        """The phone a call out rings is picked up; its ``answered`` callback and conference events are
        delivered before this returns."""
        return await self.voice.answer(call_sid)

    async def refuse(self, call_sid: str, status: str = "no-answer") -> SimCall:
        """The phone a call out rings is not answered (or busy, or fails)."""
        return await self.voice.refuse(call_sid, status)

    async def hang_up(self, call_sid: str) -> SimCall:
        """The person on a call hangs up (leaving its conference)."""
        return await self.voice.hang_up(call_sid)

    async def settled(self) -> None:
        """Every webhook caused by REST requests so far has been delivered and answered."""
        await self.voice.settled()

    async def _post_for_network(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        try:
            answer = await self.post_signed(url, params)
        except (ClientError, TimeoutError) as exc:
            log.warning("twilio simulator: webhook to %s failed: %r", url, exc)
            return 599, ""
        return answer.status, answer.text

    def _find_call(self, sid: str) -> RecordedCall | None:
        return next((c for c in self._calls.items if c.sid == sid), None)

    def _find_message(self, sid: str) -> RecordedMessage | None:
        return next((m for m in self._messages.items if m.sid == sid), None)

    def _our_number_for(self, responder: str) -> str:
        """The number we last texted ``responder`` from (what they would be replying to)."""
        for message in reversed(self._messages.items):
            if message.to == responder:
                return str(message.from_)
        return ""

    # --- REST handlers -------------------------------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await self._admit(request, "Messages")
        if isinstance(form, web.Response):
            return form
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        error = _check_numbers(to, from_) or (None if body else (21602, "Message body is required."))
        if error:
            return self._error("Messages", 400, *error)
        message = RecordedMessage(
            sid=new_sid("SM"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            body=body,
            status_callback=form.get("StatusCallback"),
            params=form,
        )
        await self._record(self._messages, message)
        log.info("twilio simulator: SMS %s to %s: %s", message.sid, to, body)
        return self._json("Messages", 201, self._message_json(message))

    async def _create_call(self, request: web.Request) -> web.Response:
        form = await self._admit(request, "Calls")
        if isinstance(form, web.Response):
            return form
        to, from_ = form.get("To", ""), form.get("From", "")
        twiml, url = form.get("Twiml"), form.get("Url")
        error = _check_numbers(to, from_, voice=True)
        if error is None and not (twiml or url or form.get("ApplicationSid")):
            error = (21205, "Url, Twiml or ApplicationSid is required.")
        if error is None and twiml is not None:
            try:
                ET.fromstring(twiml)
            except ET.ParseError:
                error = (12100, "Document parse failure.")
        if error:
            return self._error("Calls", 400, *error)
        call = RecordedCall(
            sid=new_sid("CA"),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            twiml=twiml,
            url=url,
            status_callback=form.get("StatusCallback"),
            params=form,
        )
        await self._record(self._calls, call)
        events = frozenset(str(e) for e in (await request.post()).getall("StatusCallbackEvent", []))
        self.voice.create(form, call.sid, events)
        log.info("twilio simulator: call %s to %s", call.sid, to)
        return self._json("Calls", 201, self._call_json(call))

    async def _update_call(self, request: web.Request) -> web.Response:
        form = await self._admit(request, "Calls")
        if isinstance(form, web.Response):
            return form
        sid = request.match_info["sid"]
        if sid not in self.voice.calls:
            return self._error("Calls", 404, 20404, "The requested resource was not found")
        try:
            call = self.voice.update(sid, form)
        except ValueError as exc:
            return self._error("Calls", 400, 21218, str(exc))
        recorded = self._find_call(sid)
        body = self._call_json(recorded) if recorded is not None else {"sid": sid}
        return self._json("Calls", 200, body | {"status": call.status})

    async def _fetch_recording(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._error("Recordings", 401, 20003, "Authenticate")
        rec = self.voice.recording(request.match_info["sid"])
        if rec is None:
            return self._error("Recordings", 404, 20404, "The requested resource was not found")
        ext = request.match_info["ext"]
        self.attempts.append(ApiAttempt("Recordings", 200))
        if ext == "json":
            return web.json_response(self.voice.recording_json(rec))
        media = SILENT_MP3 if ext == "mp3" else SILENT_WAV
        return web.Response(body=media, content_type="audio/mpeg" if ext == "mp3" else "audio/x-wav")

    async def _delete_recording(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error("Recordings", 401, 20003, "Authenticate")
        fault = self._take_fault()
        if fault is not None and not fault.stall:
            return self._error("Recordings", fault.status, fault.code, fault.message)
        if not self.voice.delete_recording(request.match_info["sid"]):
            return self._error("Recordings", 404, 20404, "The requested resource was not found")
        self.attempts.append(ApiAttempt("Recordings", 204))
        return web.Response(status=204)

    async def _list_conferences(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error("Conferences", 401, 20003, "Authenticate")
        name = request.query.get("FriendlyName")
        found = [c for c in self.voice.conferences.values() if name is None or c.name == name]
        return web.json_response({"conferences": [self.voice.conference_json(c) for c in found]})

    async def _fetch_message(self, request: web.Request) -> web.Response:
        message = self._find_message(request.match_info["sid"])
        if message is None:
            return self._error("Messages", 404, 20404, "The requested resource was not found")
        return self._json("Messages", 200, self._message_json(message))

    async def _fetch_call(self, request: web.Request) -> web.Response:
        call = self._find_call(request.match_info["sid"])
        if call is None:
            return self._error("Calls", 404, 20404, "The requested resource was not found")
        return self._json("Calls", 200, self._call_json(call))

    async def _list_messages(self, request: web.Request) -> web.Response:
        return web.json_response({"messages": [self._message_json(m) for m in self._messages.items]})

    async def _list_calls(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"calls": [self._call_json(c) | {"twiml": c.twiml} for c in self._calls.items]}
        )

    # --- demo control API: make the simulator send a signed webhook (loopback, unauthenticated) ---

    async def _control_sms_reply(self, request: web.Request) -> web.Response:
        """``{"to_url", "from", "body"}``: a responder texts back."""
        args = await _json_object(request)
        answer = await self.reply_sms(
            _require(args, "to_url"), _require(args, "from"), _require(args, "body")
        )
        return web.json_response(_answer_json(answer))

    async def _control_digits(self, request: web.Request) -> web.Response:
        """``{"call_sid", "digits", "to_url"?}``: the callee presses keys (to_url: the Gather action)."""
        args = await _json_object(request)
        call = self._find_call(_require(args, "call_sid"))
        to_url = args.get("to_url") or (call.gather_action if call else None)
        if not to_url:
            raise web.HTTPBadRequest(text='{"error": "no_gather_action", "detail": "pass to_url"}')
        answer = await self.press_digits(str(to_url), _require(args, "call_sid"), _require(args, "digits"))
        return web.json_response(_answer_json(answer))

    async def _list_voice(self, request: web.Request) -> web.Response:
        """Every call on the network, conference and recording (what the demo shows)."""
        voice = self.voice
        return web.json_response(
            {
                "numbers": voice.numbers,
                "calls": [voice.call_json(c) for c in voice.calls.values()],
                "conferences": [voice.conference_json(c) for c in voice.conferences.values()],
                "recordings": [voice.recording_json(r) for r in voice.recordings.values() if not r.deleted],
            }
        )

    async def _control_number(self, request: web.Request) -> web.Response:
        """``{"number", "voice_url"}``: where a call to one of our numbers is posted."""
        args = await _json_object(request)
        self.configure_number(_require(args, "number"), _require(args, "voice_url"))
        return web.json_response({"numbers": self.voice.numbers})

    async def _control_dial_in(self, request: web.Request) -> web.Response:
        """``{"from", "to", "voice_url"?}``: someone calls one of our numbers."""
        args = await _json_object(request)
        url = args.get("voice_url")
        try:
            call = await self.dial_in(
                _require(args, "from"), _require(args, "to"), url if isinstance(url, str) else None
            )
        except LookupError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": "no_voice_url", "detail": str(exc)})) from None
        return web.json_response(self.voice.call_json(call))

    async def _control_call(
        self, request: web.Request, act: Callable[[str], Awaitable[SimCall]]
    ) -> web.Response:
        args = await _json_object(request)
        try:
            call = await act(_require(args, "call_sid"))
        except (LookupError, ValueError) as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": "bad_call", "detail": str(exc)})) from None
        return web.json_response(self.voice.call_json(call))

    async def _control_answer(self, request: web.Request) -> web.Response:
        """``{"call_sid"}``: the phone a call out rings is picked up."""
        return await self._control_call(request, self.answer)

    async def _control_refuse(self, request: web.Request) -> web.Response:
        """``{"call_sid", "status"?}``: the phone is not answered (no-answer, busy, failed)."""
        args = await _json_object(request)
        status = args.get("status", "no-answer")
        try:
            call = await self.refuse(_require(args, "call_sid"), status if isinstance(status, str) else "")
        except (LookupError, ValueError) as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": "bad_call", "detail": str(exc)})) from None
        return web.json_response(self.voice.call_json(call))

    async def _control_hang_up(self, request: web.Request) -> web.Response:
        """``{"call_sid"}``: the person on the call hangs up."""
        return await self._control_call(request, self.hang_up)

    async def _control_status(self, request: web.Request) -> web.Response:
        """``{"sid", "status", "to_url"?, "error_code"?}``: a status callback (to_url: StatusCallback)."""
        args = await _json_object(request)
        sid = _require(args, "sid")
        recorded = self._find_call(sid) or self._find_message(sid)
        to_url = args.get("to_url") or (recorded.status_callback if recorded else None)
        if not to_url:
            raise web.HTTPBadRequest(text='{"error": "no_status_callback", "detail": "pass to_url"}')
        code = args.get("error_code")
        answer = await self.send_status(
            str(to_url), sid, _require(args, "status"), error_code=code if isinstance(code, int) else None
        )
        return web.json_response(_answer_json(answer))

    async def _admit(self, request: web.Request, resource: str) -> dict[str, str] | web.Response:
        """Authenticate, apply any injected fault, and read the form; a Response means stop here."""
        if not self._authorised(request):
            return self._error(resource, 401, 20003, "Authenticate")
        fault = self._take_fault()
        if fault is not None and fault.stall:
            await asyncio.sleep(fault.stall)
        elif fault is not None:
            return self._error(resource, fault.status, fault.code, fault.message)
        post = await request.post()
        return {key: str(value) for key, value in post.items()}

    def _authorised(self, request: web.Request) -> bool:
        if request.match_info.get("account_sid") != self.account_sid:
            return False
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _take_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.pop(0)
        return fault

    async def _record(self, feed: _Feed, item: Any) -> None:
        async with self._changed:
            feed.items.append(item)
            self._changed.notify_all()

    def _json(self, resource: str, status: int, payload: dict[str, Any]) -> web.Response:
        self.attempts.append(ApiAttempt(resource, status))
        return web.json_response(payload, status=status)

    def _error(self, resource: str, status: int, code: int, message: str) -> web.Response:
        payload = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return self._json(resource, status, payload)

    def _message_json(self, m: RecordedMessage) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=False)
        return {
            "account_sid": m.account_sid,
            "api_version": API_VERSION,
            "body": m.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "GBP",
            "sid": m.sid,
            "status": "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{m.account_sid}/Messages/{m.sid}/Media.json"
            },
            "to": m.to,
            "uri": f"/{API_VERSION}/Accounts/{m.account_sid}/Messages/{m.sid}.json",
        }

    def _call_json(self, c: RecordedCall) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=False)
        return {
            "account_sid": c.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": c.from_,
            "from_formatted": c.from_,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "GBP",
            "sid": c.sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {},
            "to": c.to,
            "to_formatted": c.to,
            "uri": f"/{API_VERSION}/Accounts/{c.account_sid}/Calls/{c.sid}.json",
        }


@web.middleware
async def _webhook_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A control call whose webhook could not be delivered answers 502 instead of a stack trace."""
    try:
        return await handler(request)
    except (ClientError, TimeoutError) as exc:
        return web.json_response({"error": "webhook_undeliverable", "detail": repr(exc)}, status=502)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        args = await request.json()
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise web.HTTPBadRequest(text='{"error": "bad_json", "detail": "expected a JSON object"}')
    return args


def _require(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise web.HTTPBadRequest(text=json.dumps({"error": "missing_field", "detail": f"{name} is required"}))
    return value


def _answer_json(answer: WebhookResponse) -> dict[str, Any]:
    return {"status": answer.status, "content_type": answer.content_type, "text": answer.text}


def _check_numbers(to: str, from_: str, *, voice: bool = False) -> tuple[int, str] | None:
    """Twilio's refusals of a message's or call's numbers; a call may also go to a Voice SDK client
    (``client:<identity>``) or an emergency number (an account with Emergency Calling)."""
    if not to:
        return (21604, "A 'To' phone number is required.")
    callable_ = voice and (is_emergency_number(to) or to.startswith("client:"))
    if not is_e164(to) and not callable_:
        return (21211, f"The 'To' number {to} is not a valid phone number.")
    if not from_:
        return (21603, "A 'From' phone number is required.")
    return None


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with TwilioServer(
        account_sid=args.account_sid, auth_token=args.auth_token, host=args.host, port=args.port
    ) as server:
        print(
            json.dumps(
                {
                    "base_url": server.base_url,
                    "account_sid": server.account_sid,
                    "auth_token": server.auth_token,
                }
            ),
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGINT or SIGTERM; prints its base URL and credentials as one JSON line."""
    parser = argparse.ArgumentParser(description="Local Twilio-compatible server for the demo and tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--account-sid", default=DEMO_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEMO_AUTH_TOKEN)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
