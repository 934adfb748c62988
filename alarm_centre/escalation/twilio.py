"""Inbound Twilio webhooks: check they come from Twilio, refuse replays, and turn them into small values.

The core is free of aiohttp: :func:`verify_signature`, the ``parse_*`` functions and :class:`ReplayGuard`
work on plain mappings of form fields. After them, :func:`read_verified_form` and
:func:`read_verified_webhook` are the thin aiohttp edge, and :class:`TwilioRoutes` serves the routes
``/twilio/sms``, ``/twilio/voice`` and ``/twilio/status`` on them, answering from what the escalation
recorded.

Twilio signs each webhook with ``X-Twilio-Signature``: an HMAC of the full URL it requested and the sorted
form fields, keyed with the account's auth token. The URL is the *public* one Twilio was given (for example
``https://bridge.example.org/twilio/sms``), not the address the bridge binds behind a proxy, so the bridge is
configured with its public base URL. The signature carries no timestamp, so an exact replay is refused by
remembering what was already handled: in the store (:class:`StoredReplayGuard`, so a replay is refused
after a restart and on every node), or in memory (:class:`ReplayGuard`, for a single process).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import web
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from alarm_centre.escalation import store as sql
from alarm_centre.escalation.engine import Escalation
from alarm_centre.escalation.metrics import EscalationMetrics
from alarm_centre.escalation.states import ReplyResult
from alarm_centre.http.openapi import Body, operation
from devices.numbers import whole_number

if TYPE_CHECKING:
    from aiohttp import web

    from alarm_centre.store.base import AlertStore
    from alarm_centre.store.tx import PostCommit, Tx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
MAX_WEBHOOK_BODY = 64 * 1024  # Twilio's webhooks are a few hundred bytes

ACCEPT_WORDS = frozenset({"YES", "Y", "ACCEPT", "OK", "OKAY"})
DECLINE_WORDS = frozenset({"NO", "N", "DECLINE"})
ACCEPT_DIGITS = "1"
DECLINE_DIGITS = "2"

FINAL_STATUSES = frozenset(
    {"delivered", "undelivered", "failed", "read", "completed", "busy", "no-answer", "canceled"}
)
FAILED_STATUSES = frozenset({"undelivered", "failed", "busy", "no-answer", "canceled"})

_SID_RE = re.compile(r"(SM|MM|CA)[0-9a-fA-F]{32}")
_FIRST_WORD_RE = re.compile(r"[A-Za-z0-9]+")


class Reply(StrEnum):
    """What a responder said: accept the call-out, decline it, or something we cannot read."""

    ACCEPT = "accept"
    DECLINE = "decline"
    UNKNOWN = "unknown"


class WebhookRejected(Exception):
    """A webhook we will not act on; ``error`` is a short code, ``status`` the HTTP status to answer."""

    def __init__(self, error: str, detail: str, *, status: int) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail
        self.status = status

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def _malformed(detail: str) -> WebhookRejected:
    return WebhookRejected("malformed_webhook", detail, status=400)


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A text from a responder (``From``) to our number (``To``)."""

    message_sid: str
    from_number: str
    to_number: str
    body: str
    reply: Reply

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("sms", self.message_sid)


@dataclass(frozen=True, slots=True)
class GatherInput:
    """Digits pressed during a call (the ``<Gather>`` action); ``responder`` is the person we called."""

    call_sid: str
    from_number: str
    to_number: str
    direction: str
    digits: str
    reply: Reply

    @property
    def responder(self) -> str:
        return self.to_number if self.direction.startswith("outbound") else self.from_number

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("voice", self.call_sid, self.digits)


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """A status callback for a message (``MessageStatus``) or a call (``CallStatus``)."""

    sid: str
    kind: Literal["sms", "call"]
    status: str
    error_code: int | None
    to_number: str

    @property
    def final(self) -> bool:
        """No further status will follow (delivered, failed, completed, no-answer, …)."""
        return self.status in FINAL_STATUSES

    @property
    def failed(self) -> bool:
        """The message or call did not reach the responder."""
        return self.status in FAILED_STATUSES or self.error_code is not None

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("status", self.sid, self.status)


# --- signatures -----------------------------------------------------------------------------------


def webhook_url(public_base_url: str, path_qs: str) -> str:
    """The URL Twilio requested: the configured public base joined with the request's raw path and query."""
    return public_base_url.rstrip("/") + "/" + path_qs.lstrip("/")


def verify_signature(
    validator: RequestValidator,
    url: str,
    params: Mapping[str, str],
    signature: str | None,
    *,
    algorithm: str | None = None,
) -> None:
    """Raise WebhookRejected (403) unless ``signature`` is Twilio's signature of ``url`` and ``params``.

    ``params`` may be a multi-dict (``getall``) so repeated fields are signed as Twilio signs them.
    """
    if not signature:
        raise WebhookRejected("missing_signature", f"no {SIGNATURE_HEADER} header", status=403)
    if not validator.validate(url, params, signature, algorithm):
        raise WebhookRejected(
            "bad_signature",
            f"{SIGNATURE_HEADER} does not match this request to {url}",
            status=403,
        )


class ReplayGuard:
    """Remembers the webhooks already handled for ``window`` seconds and refuses an exact repeat.

    Call :meth:`claim` before acting on a webhook and :meth:`release` if acting on it failed (so Twilio's
    own retry is let through). At most ``max_entries`` are kept; the oldest are forgotten first.
    """

    def __init__(
        self,
        *,
        window: float = 3600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, key: Hashable) -> None:
        """Record ``key``; raise WebhookRejected (403, ``replayed``) if it was seen within the window."""
        now = self._clock()
        self._expire(now)
        if key in self._seen:
            raise WebhookRejected("replayed", "this webhook was already received", status=403)
        self._seen[key] = now + self._window
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def release(self, key: Hashable) -> None:
        """Forget ``key`` (its handling failed), so a retry of the same webhook is accepted."""
        self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest_key, expires = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[oldest_key]


class StoredReplayGuard:
    """:class:`ReplayGuard` kept in the store (table ``webhook_replays``): a webhook claimed on one node
    is a replay on every other, and after a restart. Entries expire ``window`` seconds after the claim.
    """

    def __init__(
        self, store: AlertStore, *, window: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._window = window
        self._clock = clock

    @staticmethod
    def _key(key: tuple[str, ...]) -> str:
        return "|".join(key)[:200]

    async def claim(self, key: tuple[str, ...]) -> None:
        """Record ``key``; raise WebhookRejected (403, ``replayed``) if it was claimed within the window."""

        async def work(tx: Tx, post: PostCommit) -> None:
            await self.claim_in(tx, key)

        await self._store.transaction(work)

    async def claim_in(self, tx: Tx, key: tuple[str, ...]) -> None:
        """:meth:`claim` inside a transaction of the caller's: the claim commits (or rolls back) with the
        work the webhook does, so a failed one needs no release and costs no commit of its own."""
        now = self._clock()
        if await sql.claim_replay(tx, self._key(key), now, now + self._window) != 1:
            raise WebhookRejected("replayed", "this webhook was already received", status=403)

    async def release(self, key: tuple[str, ...]) -> None:
        """Forget ``key`` (its handling failed), so a retry of the same webhook is accepted."""
        stored = self._key(key)

        async def work(tx: Tx, post: PostCommit) -> None:
            await sql.forget_replay(tx, stored)

        await self._store.transaction(work)


# --- parsing --------------------------------------------------------------------------------------


def parse_reply_text(text: str) -> Reply:
    """Read a responder's text by its first word: YES/Y/ACCEPT/OK accept, NO/N/DECLINE decline."""
    match = _FIRST_WORD_RE.search(text)
    if match is None:
        return Reply.UNKNOWN
    word = match.group().upper()
    if word in ACCEPT_WORDS:
        return Reply.ACCEPT
    if word in DECLINE_WORDS:
        return Reply.DECLINE
    return Reply.UNKNOWN


def parse_digits(digits: str) -> Reply:
    """1 accepts, 2 declines, anything else (or nothing) is unknown."""
    if digits == ACCEPT_DIGITS:
        return Reply.ACCEPT
    if digits == DECLINE_DIGITS:
        return Reply.DECLINE
    return Reply.UNKNOWN


def _sid(params: Mapping[str, str], name: str, prefixes: tuple[str, ...]) -> str:
    sid = params.get(name, "")
    if not sid:
        raise _malformed(f"{name} is required")
    if not _SID_RE.fullmatch(sid) or not sid.startswith(prefixes):
        raise _malformed(f"{name} is not a Twilio {'/'.join(prefixes)} sid")
    return sid


def parse_inbound_sms(params: Mapping[str, str]) -> InboundSms:
    """An inbound-SMS webhook (``/twilio/sms``): MessageSid, From, To, Body."""
    sid = _sid(params, "MessageSid", ("SM", "MM"))
    from_number = params.get("From", "")
    if not from_number:
        raise _malformed("From is required")
    body = params.get("Body", "")
    return InboundSms(
        message_sid=sid,
        from_number=from_number,
        to_number=params.get("To", ""),
        body=body,
        reply=parse_reply_text(body),
    )


def parse_gather(params: Mapping[str, str]) -> GatherInput:
    """A voice webhook (``/twilio/voice``): CallSid, From, To, Direction and the Digits pressed, if any."""
    sid = _sid(params, "CallSid", ("CA",))
    digits = params.get("Digits", "")
    if len(digits) > 32 or not all(c in "0123456789*#w" for c in digits):
        raise _malformed("Digits must be keypad characters")
    return GatherInput(
        call_sid=sid,
        from_number=params.get("From", ""),
        to_number=params.get("To", ""),
        direction=params.get("Direction", ""),
        digits=digits,
        reply=parse_digits(digits),
    )


def parse_status(params: Mapping[str, str]) -> DeliveryStatus:
    """A status callback (``/twilio/status``) for a message or a call."""
    kind: Literal["sms", "call"]
    if "CallSid" in params:
        kind, sid, status = "call", _sid(params, "CallSid", ("CA",)), params.get("CallStatus", "")
    else:
        kind, sid = "sms", _sid(params, "MessageSid", ("SM", "MM"))
        status = params.get("MessageStatus") or params.get("SmsStatus", "")
    if not status or len(status) > 32:
        raise _malformed("MessageStatus or CallStatus is required")
    raw_code = params.get("ErrorCode", "")
    error_code = whole_number(raw_code, high=2**31 - 1) if raw_code else None
    if raw_code and error_code is None:
        raise _malformed("ErrorCode must be a number")
    return DeliveryStatus(
        sid=sid, kind=kind, status=status.lower(), error_code=error_code, to_number=params.get("To", "")
    )


# --- what we answer Twilio with -------------------------------------------------------------------


def sms_reply_twiml(text: str | None = None) -> str:
    """TwiML answering an inbound SMS: a confirmation text, or nothing."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def voice_say_twiml(text: str, *, language: str = "en-GB") -> str:
    """TwiML that says ``text`` and hangs up.

    The text must come from what the key press *did* (recorded by the escalation), not from the key:
    a "1" on a call nobody knows accepted nothing.
    """
    response = VoiceResponse()
    response.say(text, language=language)
    response.hangup()
    return str(response)


# --- aiohttp edge ---------------------------------------------------------------------------------

T = TypeVar("T", InboundSms, GatherInput, DeliveryStatus)


def http_error(exc: WebhookRejected) -> web.HTTPException:
    """The aiohttp error for a rejected webhook, with a JSON ``{"error", "detail"}`` body."""
    classes: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        403: web.HTTPForbidden,
    }
    body = json.dumps(exc.to_json())
    if exc.status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=MAX_WEBHOOK_BODY, actual_size=0, text=body, content_type="application/json"
        )
    return classes.get(exc.status, web.HTTPBadRequest)(text=body, content_type="application/json")


async def read_verified_form(
    request: web.Request, validator: RequestValidator, public_base_url: str
) -> dict[str, str]:
    """Read a webhook's form fields, raising a 403 (JSON body) unless Twilio's signature checks out.

    The signed URL is ``public_base_url`` joined with the request's raw path and query string.
    """
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        raise http_error(WebhookRejected("too_large", f"body over {MAX_WEBHOOK_BODY} bytes", status=413))
    from multidict import MultiDict

    form = await request.post()
    url = webhook_url(public_base_url, request.raw_path)
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    try:
        if any(not isinstance(value, str) for value in form.values()):
            raise _malformed("file uploads are not Twilio webhooks")
        fields = MultiDict((key, str(value)) for key, value in form.items())
        verify_signature(validator, url, fields, request.headers.get(SIGNATURE_HEADER), algorithm=algorithm)
    except WebhookRejected as exc:
        raise http_error(exc) from None
    return {key: fields[key] for key in fields}


async def read_verified_webhook(
    request: web.Request,
    validator: RequestValidator,
    public_base_url: str,
    parse: Callable[[Mapping[str, str]], T],
    guard: ReplayGuard | StoredReplayGuard,
) -> T:
    """Verify, parse and claim a webhook in one step (403 forged or replayed, 400 malformed).

    If acting on the returned value fails, call ``guard.release(value.replay_key)`` so Twilio's retry
    is accepted.
    """
    form = await read_verified_form(request, validator, public_base_url)
    try:
        value = parse(form)
        claimed = guard.claim(value.replay_key)
        if inspect.isawaitable(claimed):
            await claimed
    except WebhookRejected as exc:
        raise http_error(exc) from None
    return value


def twiml_response(twiml: str) -> web.Response:
    """An aiohttp response carrying TwiML."""
    return web.Response(text=twiml, content_type="application/xml")


SMS_ANSWERS: dict[ReplyResult, str | None] = {
    ReplyResult.ACCEPTED: "Thank you, you have accepted. The control centre has been told.",
    ReplyResult.DECLINED: "Thank you. The control centre will contact someone else.",
    ReplyResult.UNREADABLE: "Sorry, we did not understand. Reply YES to accept or NO to decline.",
    ReplyResult.LATE: "Thank you. Someone else has already accepted this call-out.",
    ReplyResult.SUPERVISOR: "Noted on the alert's timeline.",
    ReplyResult.ACKNOWLEDGED: "Thank you, you have acknowledged the alert. Other texts and calls stop.",
    ReplyResult.IGNORED: None,
}
#: What a call hears after pressing a key, by what the key press did. A call the bridge does not know
#: (or whose alert is gone) hears a neutral goodbye: nothing was accepted, so nothing may say it was.
VOICE_ANSWERS: dict[ReplyResult, str] = {
    ReplyResult.ACCEPTED: "Thank you. You have accepted this alert and the control centre has been told.",
    ReplyResult.DECLINED: "Thank you. The control centre will contact someone else.",
    ReplyResult.UNREADABLE: "Sorry, that key was not recognised. The control centre will contact you again.",
    ReplyResult.LATE: "Thank you. Someone else has already accepted this call-out.",
    ReplyResult.SUPERVISOR: "Thank you. Your answer is noted on the alert.",
    ReplyResult.ACKNOWLEDGED: "Thank you. You have acknowledged this alert. Other calls and texts stop.",
    ReplyResult.IGNORED: "Thank you. Goodbye.",
}


_FORM = ("application/x-www-form-urlencoded",)
_TWILIO_SIGNED = "Twilio's X-Twilio-Signature header (HMAC-SHA1 with the account's auth token)"
_TWILIO_ERRORS = {
    400: "a field Twilio always sends is missing or malformed",
    403: "no valid signature, or a replay",
    404: "Twilio is not enabled on this bridge",
}


def _form(*fields: str) -> Body:
    """A Twilio webhook's form fields (all text)."""
    return Body({"type": "object", "properties": {f: {"type": "string"} for f in fields}}, media_types=_FORM)


#: Where ``/twilio/voice`` hands a call *to* the centre (``Direction=inbound``, no key pressed) once it is
#: verified: the telephony feature sets it (``bridge/feature_telephony.py``), claims the webhook against
#: replays with the guard in the transaction that takes the call (:meth:`StoredReplayGuard.claim_in`;
#: ``WebhookRejected`` when replayed), and answers with the call's TwiML. Unset (telephony off), such a
#: call hears the neutral goodbye as before.
INBOUND_CALLS: web.AppKey[Callable[[GatherInput, StoredReplayGuard], Awaitable[str]]] = web.AppKey(
    "inbound_calls"
)


# --- the routes ----------------------------------------------------------------------------------
class TwilioRoutes:
    """``/twilio/sms``, ``/twilio/voice`` and ``/twilio/status`` (404 while Twilio is disabled)."""

    def __init__(
        self,
        escalation: Escalation,
        metrics: EscalationMetrics,
        public_url: Callable[[], str],
        *,
        enabled: bool,
        auth_token: str,
        language: str,
        replay_window: float,
    ) -> None:
        self.enabled = enabled
        self.language = language
        self.validator = RequestValidator(auth_token) if enabled else None
        self.guard = StoredReplayGuard(escalation.store, window=replay_window)
        self.escalation = escalation
        self.metrics = metrics
        self.public_url = public_url

    def _check(self) -> RequestValidator:
        if not self.enabled or self.validator is None:
            raise web.HTTPNotFound()
        return self.validator

    async def _guarded(
        self,
        route: str,
        request: web.Request,
        act: Callable[[], Awaitable[web.Response]],
        key: tuple[str, ...],
    ) -> web.Response:
        try:
            response = await act()
        except BaseException:
            try:
                await self.guard.release(key)
            except Exception as exc:  # the store is failing too: Twilio's retry is refused as a replay
                log.warning("could not release twilio webhook %s for a retry: %s", key, exc, exc_info=True)
            self.metrics.webhooks.labels(route, "error").inc()
            raise
        self.metrics.webhooks.labels(route, "ok").inc()
        return response

    async def _read(
        self,
        route: str,
        request: web.Request,
        parse: Callable[[Mapping[str, str]], Any],
        *,
        claim: bool = True,
    ) -> Any:
        """Verify and parse a webhook, and (``claim``) claim it against replays; each refusal counted."""
        validator = self._check()
        try:
            if claim:
                return await read_verified_webhook(request, validator, self.public_url(), parse, self.guard)
            form = await read_verified_form(request, validator, self.public_url())
            try:
                return parse(form)
            except WebhookRejected as exc:
                raise http_error(exc) from None
        except web.HTTPException as exc:
            self.metrics.webhooks.labels(route, f"refused_{exc.status}").inc()
            log.warning("twilio webhook %s refused (%s): %s", route, exc.status, exc.text)
            raise

    @operation(
        "Twilio: an SMS reply from a supervisor or responder (YES / NO)",
        right=None,
        body=_form("From", "To", "Body", "MessageSid", "AccountSid"),
        answer_types=("application/xml",),
        signed=_TWILIO_SIGNED,
        errors=_TWILIO_ERRORS,
    )
    async def sms(self, request: web.Request) -> web.Response:
        value = await self._read("sms", request, parse_inbound_sms)

        async def act() -> web.Response:
            outcome = await self.escalation.on_reply(
                from_number=value.from_number, reply=value.reply.value, via="sms", ref=value.message_sid
            )
            return twiml_response(sms_reply_twiml(SMS_ANSWERS[outcome.recorded]))

        return await self._guarded("sms", request, act, value.replay_key)

    @operation(
        "Twilio: keys pressed on a call-out (1 accept, 2 decline), or a call to the centre (inbound)",
        right=None,
        body=_form("CallSid", "Digits", "From", "To", "Direction", "AccountSid"),
        answer_types=("application/xml",),
        signed=_TWILIO_SIGNED,
        errors=_TWILIO_ERRORS,
    )
    async def voice(self, request: web.Request) -> web.Response:
        inbound = request.app.get(INBOUND_CALLS)
        value = await self._read("voice", request, parse_gather, claim=inbound is None)
        if inbound is not None and value.direction == "inbound" and not value.digits:
            # A call to the centre: the telephony claims it against replays in its own transaction.
            try:
                twiml = await inbound(value, self.guard)
            except WebhookRejected as exc:
                self.metrics.webhooks.labels("voice", f"refused_{exc.status}").inc()
                raise http_error(exc) from None
            except BaseException:
                self.metrics.webhooks.labels("voice", "error").inc()
                raise
            self.metrics.webhooks.labels("voice", "ok").inc()
            return twiml_response(twiml)
        if inbound is not None:
            try:
                await self.guard.claim(value.replay_key)
            except WebhookRejected as exc:
                self.metrics.webhooks.labels("voice", f"refused_{exc.status}").inc()
                raise http_error(exc) from None

        async def act() -> web.Response:
            outcome = await self.escalation.on_digits(
                call_sid=value.call_sid, reply=value.reply.value, digits=value.digits
            )
            spoken = VOICE_ANSWERS[outcome.recorded]
            return twiml_response(voice_say_twiml(spoken, language=self.language))

        return await self._guarded("voice", request, act, value.replay_key)

    @operation(
        "Twilio: delivery status of an SMS or call",
        right=None,
        body=_form(
            "MessageSid",
            "MessageStatus",
            "SmsStatus",
            "CallSid",
            "CallStatus",
            "ErrorCode",
            "To",
            "AccountSid",
        ),
        answer_types=("application/xml",),
        signed=_TWILIO_SIGNED,
        errors=_TWILIO_ERRORS,
    )
    async def status(self, request: web.Request) -> web.Response:
        value = await self._read("status", request, parse_status)

        async def act() -> web.Response:
            await self.escalation.on_status(
                sid=value.sid,
                status=value.status,
                failed=value.failed,
                final=value.final,
                error_code=value.error_code,
            )
            return twiml_response("<Response/>")

        return await self._guarded("status", request, act, value.replay_key)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/twilio/sms", self.sms)
        app.router.add_post("/twilio/voice", self.voice)
        app.router.add_post("/twilio/status", self.status)


__all__ = [
    "INBOUND_CALLS",
    "DeliveryStatus",
    "GatherInput",
    "InboundSms",
    "ReplayGuard",
    "Reply",
    "StoredReplayGuard",
    "TwilioRoutes",
    "WebhookRejected",
    "http_error",
    "parse_digits",
    "parse_gather",
    "parse_inbound_sms",
    "parse_reply_text",
    "parse_status",
    "read_verified_form",
    "read_verified_webhook",
    "sms_reply_twiml",
    "twiml_response",
    "verify_signature",
    "voice_say_twiml",
    "webhook_url",
]
