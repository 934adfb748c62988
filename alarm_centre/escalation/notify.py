"""Notifications through Twilio: send an SMS or place a voice call, with retries, as structured results.

:class:`Notifier` wraps the twilio library's async client. It knows nothing about alerts: callers pass the
number, the text and the callback URLs. A failure comes back as :class:`DeliveryFailed` saying whether
trying again later may help (``retryable``), so the escalation outbox can reschedule or give up.

Retrying a POST after a timeout or a 5xx may send the same SMS twice; for an alarm that is the right way
to err (a duplicate text beats a lost one).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from devices.phone import is_e164, mask_number, mask_numbers

log = logging.getLogger(__name__)

MAX_SMS_BODY = 1600  # Twilio's limit for one message body
MAX_SAY_TEXT = 4096  # Twilio's limit for one <Say>

DeliveryKind = Literal["sms", "call"]


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Twilio accepted an SMS or a call: its sid (``SM…``/``CA…``) and first status (usually ``queued``)."""

    sid: str
    to: str
    status: str
    kind: DeliveryKind = "sms"
    attempts: int = 1


class DeliveryFailed(Exception):
    """Twilio did not accept the SMS or call.

    ``retryable`` is true when a later attempt may succeed (5xx, 429, timeout, connection error) and false
    when it will not (bad number, bad credentials, any other 4xx). ``status`` is the HTTP status and
    ``code`` Twilio's error code, when there was an answer.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        kind: DeliveryKind,
        to: str,
        status: int | None = None,
        code: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.kind = kind
        self.to = to
        self.status = status
        self.code = code
        self.attempts = attempts

    def __str__(self) -> str:
        # Said in logs and kept as the notification's last error: the numbers masked, Twilio's too.
        parts = [f"{self.kind} to {mask_number(self.to)} failed: {mask_numbers(self.reason)}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"Twilio error {self.code}")
        parts.append(f"after {self.attempts} attempt(s)")
        return ", ".join(parts)


def build_call_twiml(
    text: str, *, gather_action: str, language: str = "en-GB", repeat: int = 2, gather_timeout: int = 8
) -> str:
    """TwiML for an escalation call: read ``text`` and ask for 1 (accept) or 2 (decline).

    The ``<Say>`` sits inside ``<Gather numDigits="1">`` so a key press interrupts the speech; the message
    is read ``repeat`` times before the call says goodbye.
    """
    response = VoiceResponse()
    gather = Gather(
        num_digits=1,
        action=gather_action,
        method="POST",
        timeout=gather_timeout,
        action_on_empty_result=False,
    )
    text = text.strip()
    prompt = f"{text}{'' if text.endswith(('.', '!', '?')) else '.'} Press 1 to accept, or 2 to decline."
    for _ in range(max(1, repeat)):
        gather.say(prompt, language=language)
        gather.pause(length=1)
    response.append(gather)
    response.say("No key was pressed. Goodbye.", language=language)
    response.hangup()
    return str(response)


class Notifier:
    """Sends SMS and places calls through Twilio's async client; an async context manager.

    ``api_base_url`` points the client at another server (the local simulator); empty means real Twilio.
    Each request is bounded by ``request_timeout`` seconds; retryable failures are tried up to
    ``max_attempts`` times with jittered exponential backoff starting at ``backoff`` seconds.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        api_base_url: str = "",
        request_timeout: float = 10.0,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        language: str = "en-GB",
        ring_timeout: int = 30,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("twilio account_sid and auth_token are required")
        if not is_e164(from_number):
            raise ValueError(
                f"twilio from_number must be an E.164 number like +441234567890, not {from_number!r}"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self._api_base_url = api_base_url.rstrip("/")
        self._request_timeout = request_timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._language = language
        self._ring_timeout = ring_timeout
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    async def __aenter__(self) -> Self:
        # The http client opens an aiohttp session, so it is made here, inside the running loop.
        self._http = AsyncTwilioHttpClient()
        client = Client(self._account_sid, self._auth_token, http_client=self._http)
        if self._api_base_url:
            # Messages and Calls both live on the api domain (v2010 reads the domain's base_url);
            # region/edge (for example from TWILIO_REGION) would rewrite the host, so they are cleared.
            client.api.base_url = self._api_base_url
            client.region = None
            client.edge = None
        self._client = client
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None

    async def send_sms(self, *, to: str, body: str, status_callback: str | None = None) -> SentMessage:
        """Send ``body`` to ``to``; Twilio posts delivery updates to ``status_callback`` if given."""
        self._check_to("sms", to)
        if not body or len(body) > MAX_SMS_BODY:
            raise DeliveryFailed(
                f"body must be 1-{MAX_SMS_BODY} characters", retryable=False, kind="sms", to=to
            )
        params: dict[str, Any] = {"to": to, "from_": self.from_number, "body": body}
        if status_callback:
            params["status_callback"] = status_callback
        client = self._require_client()
        return await self._deliver("sms", to, lambda: client.messages.create_async(**params))

    async def place_call(
        self, *, to: str, text: str, gather_action: str, status_callback: str | None = None
    ) -> SentMessage:
        """Call ``to``, read ``text`` and gather one digit, posted to ``gather_action`` (1 means accept).

        ``status_callback`` receives the ``answered`` and ``completed`` call events.
        """
        self._check_to("call", to)
        if not text or len(text) > MAX_SAY_TEXT:
            raise DeliveryFailed(
                f"text must be 1-{MAX_SAY_TEXT} characters", retryable=False, kind="call", to=to
            )
        twiml = build_call_twiml(text, gather_action=gather_action, language=self._language)
        params: dict[str, Any] = {
            "to": to,
            "from_": self.from_number,
            "twiml": twiml,
            "timeout": self._ring_timeout,
        }
        if status_callback:
            params["status_callback"] = status_callback
            params["status_callback_event"] = ["answered", "completed"]
            params["status_callback_method"] = "POST"
        client = self._require_client()
        return await self._deliver("call", to, lambda: client.calls.create_async(**params))

    async def stop_call(self, sid: str, *, status: str = "canceled") -> None:
        """Stop a call we placed: ``canceled`` while it rings (an answered one carries on), ``completed``
        to hang it up. Tried once (the caller retries); a 404 means it is already over."""
        client = self._require_client()
        await self._once(sid, lambda: client.calls(sid).update_async(status=status))

    async def _once(self, sid: str, request: Callable[[], Awaitable[Any]]) -> None:
        try:
            async with asyncio.timeout(self._request_timeout):
                await request()
        except Exception as exc:  # classified below; anything unknown is re-raised
            failure = _classify(exc, kind="call", to=sid, attempts=1)
            if failure is None:
                raise
            if failure.status == 404:
                return  # already over (or already gone)
            raise failure from exc

    def _require_client(self) -> Client:
        if self._client is None:
            raise RuntimeError("Notifier is not open; use 'async with Notifier(...)'")
        return self._client

    @staticmethod
    def _check_to(kind: DeliveryKind, to: str) -> None:
        if not is_e164(to):
            raise DeliveryFailed(
                f"{mask_number(to)} is not an E.164 phone number",
                retryable=False,
                kind=kind,
                to=to,
                code=21211,
            )

    async def _deliver(
        self, kind: DeliveryKind, to: str, create: Callable[[], Awaitable[Any]]
    ) -> SentMessage:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(self._request_timeout):
                    instance = await create()
            except Exception as exc:  # classified below; anything unknown is re-raised
                failure = _classify(exc, kind=kind, to=to, attempts=attempt)
                if failure is None:
                    raise
                if not failure.retryable or attempt >= self._max_attempts:
                    log.warning(
                        "twilio %s to %s gave up: %s", kind, mask_number(to), mask_numbers(str(failure))
                    )
                    raise failure from exc
                delay = self._delay(attempt)
                log.warning(
                    "twilio %s to %s attempt %d failed (%s); retrying in %.2fs",
                    kind,
                    mask_number(to),
                    attempt,
                    mask_numbers(failure.reason),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            sent = SentMessage(
                sid=str(instance.sid), to=to, status=str(instance.status), kind=kind, attempts=attempt
            )
            log.info(
                "twilio %s %s to %s: %s (attempt %d)", kind, sent.sid, mask_number(to), sent.status, attempt
            )
            return sent

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def _classify(exc: BaseException, *, kind: DeliveryKind, to: str, attempts: int) -> DeliveryFailed | None:
    """Turn a client-side exception into a DeliveryFailed, or None if it is not a delivery problem."""
    common: dict[str, Any] = {"kind": kind, "to": to, "attempts": attempts}
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        message = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
        code = int(exc.code) if exc.code is not None else None
        retryable = status >= 500 or status == 429
        return DeliveryFailed(str(message), retryable=retryable, status=status, code=code, **common)
    if isinstance(exc, TimeoutError):
        return DeliveryFailed("timed out waiting for Twilio", retryable=True, **common)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return DeliveryFailed(f"cannot reach Twilio: {exc!r}", retryable=True, **common)
    if isinstance(exc, TwilioException):
        return DeliveryFailed(f"twilio client error: {exc}", retryable=False, **common)
    return None
