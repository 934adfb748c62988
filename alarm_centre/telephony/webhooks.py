"""Twilio's webhooks about the centre's calls: the inbound call itself and what follows it.

- ``POST /twilio/voice`` with ``Direction=inbound`` (served by the escalation's route, which checks the
  signature and refuses replays, then hands the call here through :data:`INBOUND_CALLS`): the call is
  matched and queued, and answered with TwiML that puts the caller into the call's conference.
- ``POST /twilio/calls/status?leg=<id>``: a leg we placed was answered, or ended.
- ``POST /twilio/calls/conference?call=<id>``: the conference started or ended, someone joined or left.
- ``POST /twilio/calls/recording?call=<id>``: a recording is ready.

Each is verified (403 ``missing_signature`` / ``bad_signature``; the signed URL includes the query) and
parsed (400 ``malformed_webhook``) with the escalation's own functions, then claimed against replays
(403 ``replayed``) *in the transaction of its work*: both commit together, so a failure leaves no claim
behind (Twilio's retry is taken), and the webhooks of many calls at once share one commit
(:mod:`.batch`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

from alarm_centre.escalation.twilio import (
    GatherInput,
    StoredReplayGuard,
    WebhookRejected,
    _form,
    _malformed,
    http_error,
    read_verified_form,
    twiml_response,
)
from alarm_centre.http.errors import json_exception
from alarm_centre.http.openapi import operation
from alarm_centre.store.tx import Tx
from alarm_centre.telephony.calls import Before, Telephony
from alarm_centre.telephony.metrics import TelephonyMetrics
from alarm_centre.telephony.recordings import Recordings
from alarm_centre.telephony.twiml import (
    CONFERENCE_PATH,
    RECORDING_PATH,
    STATUS_PATH,
    caller_twiml,
    conference_options,
)
from devices.numbers import whole_number

log = logging.getLogger(__name__)

_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_CONFERENCE_SID = re.compile(r"CF[0-9a-fA-F]{32}")
_RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
_STATUS = re.compile(r"[a-z-]{1,32}")
CONFERENCE_EVENTS = frozenset(
    {"conference-start", "conference-end", "participant-join", "participant-leave", "participant-mute",
     "participant-unmute", "participant-hold", "participant-unhold", "participant-speech-start",
     "participant-speech-stop", "announcement-end", "announcement-fail", "conference-record-start",
     "conference-record-end"}
)  # fmt: skip
MAX_RECORDING_S = 24 * 3600


def _query_id(query: Mapping[str, str], name: str) -> int:
    value = whole_number(query.get(name, ""), low=1, high=2**63 - 1)
    if value is None:
        raise _malformed(f"the callback URL's {name} must be a positive whole number")
    return value


@dataclass(frozen=True, slots=True)
class LegStatus:
    leg_id: int
    sid: str
    status: str
    error_code: int | None

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("leg", self.sid, self.status)


@dataclass(frozen=True, slots=True)
class ConferenceEvent:
    call_id: int
    event: str
    conference_sid: str
    call_sid: str
    label: str
    sequence: str

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("conference", self.conference_sid, self.event, self.call_sid, self.sequence)


@dataclass(frozen=True, slots=True)
class RecordingReport:
    call_id: int
    sid: str
    status: str
    duration_s: int
    channels: int
    url: str

    @property
    def replay_key(self) -> tuple[str, ...]:
        return ("recording", self.sid, self.status)


def _sid(params: Mapping[str, str], name: str, rule: re.Pattern[str], *, required: bool = True) -> str:
    value = params.get(name, "")
    if not value and not required:
        return ""
    if not rule.fullmatch(value):
        raise _malformed(f"{name} is {'missing' if not value else 'not a Twilio sid'}")
    return value


def parse_leg_status(query: Mapping[str, str]) -> Callable[[Mapping[str, str]], LegStatus]:
    """A call-status callback of a leg (``leg`` from the URL we gave Twilio)."""

    def parse(params: Mapping[str, str]) -> LegStatus:
        leg_id = _query_id(query, "leg")
        status = params.get("CallStatus", "")
        if not _STATUS.fullmatch(status):
            raise _malformed("CallStatus is required")
        raw = params.get("ErrorCode", "")
        code = whole_number(raw, high=2**31 - 1) if raw else None
        if raw and code is None:
            raise _malformed("ErrorCode must be a number")
        return LegStatus(leg_id, _sid(params, "CallSid", _CALL_SID), status, code)

    return parse


def parse_conference_event(query: Mapping[str, str]) -> Callable[[Mapping[str, str]], ConferenceEvent]:
    def parse(params: Mapping[str, str]) -> ConferenceEvent:
        call_id = _query_id(query, "call")
        event = params.get("StatusCallbackEvent", "")
        if event not in CONFERENCE_EVENTS:
            raise _malformed("StatusCallbackEvent is not a conference event")
        label = params.get("ParticipantLabel", "")
        if len(label) > 128:
            raise _malformed("ParticipantLabel is too long")
        sequence = params.get("SequenceNumber", "")
        if sequence and whole_number(sequence) is None:
            raise _malformed("SequenceNumber must be a number")
        return ConferenceEvent(
            call_id,
            event,
            _sid(params, "ConferenceSid", _CONFERENCE_SID),
            _sid(params, "CallSid", _CALL_SID, required=event.startswith("participant")),
            label,
            sequence,
        )

    return parse


def parse_recording(query: Mapping[str, str]) -> Callable[[Mapping[str, str]], RecordingReport]:
    def parse(params: Mapping[str, str]) -> RecordingReport:
        call_id = _query_id(query, "call")
        status = params.get("RecordingStatus", "")
        if not _STATUS.fullmatch(status):
            raise _malformed("RecordingStatus is required")
        duration = whole_number(params.get("RecordingDuration", "0") or "0", high=MAX_RECORDING_S)
        channels = whole_number(params.get("RecordingChannels", "1") or "1", low=1, high=2)
        if duration is None or channels is None:
            raise _malformed("RecordingDuration and RecordingChannels must be small whole numbers")
        url = params.get("RecordingUrl", "")
        if len(url) > 500:
            raise _malformed("RecordingUrl is too long")
        return RecordingReport(
            call_id, _sid(params, "RecordingSid", _RECORDING_SID), status, duration, channels, url
        )

    return parse


_SIGNED = "Twilio's X-Twilio-Signature header (HMAC-SHA1 of the full URL, query included, and the form)"
_ERRORS = {
    400: "a field Twilio always sends is missing or malformed, or the URL lacks its id",
    403: "no valid signature, or a replay",
    404: "telephony is not enabled on this bridge",
}


class CallWebhooks:
    """``/twilio/calls/*`` and the inbound-call handler (404 while telephony is disabled)."""

    def __init__(
        self,
        telephony: Telephony,
        recordings: Recordings,
        metrics: TelephonyMetrics,
        public_url: Callable[[], str],
        *,
        enabled: bool,
        auth_token: str,
        replay_window: float,
    ) -> None:
        self.telephony = telephony
        self.recordings = recordings
        self.metrics = metrics
        self.public_url = public_url
        self.enabled = enabled
        self.validator = RequestValidator(auth_token) if enabled and auth_token else None
        self.guard = StoredReplayGuard(telephony.store, window=replay_window)

    async def inbound(self, call: GatherInput, guard: StoredReplayGuard) -> str:
        """A call to the centre (verified): claimed against replays in the transaction that queues it,
        answered with its conference (``WebhookRejected`` when it is a replay)."""

        async def claim(tx: Tx) -> None:
            await guard.claim_in(tx, call.replay_key)

        row = await self.telephony.take_inbound(
            call_sid=call.call_sid, caller=call.from_number, called=call.to_number, before=claim
        )
        options = conference_options(self.telephony.settings, self.public_url(), int(row["id"]))
        return caller_twiml(options)

    async def _handle(
        self,
        route: str,
        request: web.Request,
        parse: Callable[[Mapping[str, str]], Any],
        act: Callable[[Any, Before], Awaitable[None]],
    ) -> web.Response:
        """Verify and parse, then act with the replay claim in the same transaction as the work: a replay
        is refused (403), and a failure stores neither (Twilio's retry is taken)."""
        if not self.enabled or self.validator is None:
            raise json_exception(web.HTTPNotFound, "not found", "telephony is not enabled on this bridge")
        try:
            form = await read_verified_form(request, self.validator, self.public_url())
            try:
                value = parse(form)
            except WebhookRejected as exc:
                raise http_error(exc) from None
        except web.HTTPException as exc:
            self.metrics.webhooks.labels(route, f"refused_{exc.status}").inc()
            log.warning("twilio call webhook %s refused (%s): %s", route, exc.status, exc.text)
            raise

        async def claim(tx: Tx) -> None:
            await self.guard.claim_in(tx, value.replay_key)

        try:
            await act(value, claim)
        except WebhookRejected as exc:
            self.metrics.webhooks.labels(route, f"refused_{exc.status}").inc()
            log.warning("twilio call webhook %s refused (%s): %s", route, exc.status, exc.detail)
            raise http_error(exc) from None
        except BaseException:
            self.metrics.webhooks.labels(route, "error").inc()
            raise
        self.metrics.webhooks.labels(route, "ok").inc()
        return twiml_response("<Response/>")

    @operation(
        "Twilio: status of a call leg the bridge placed (answered, completed, busy, no-answer, ...)",
        right=None,
        body=_form("CallSid", "CallStatus", "ErrorCode", "To", "From", "AccountSid"),
        answer_types=("application/xml",),
        signed=_SIGNED,
        errors=_ERRORS,
    )
    async def status(self, request: web.Request) -> web.Response:
        async def act(value: LegStatus, before: Before) -> None:
            await self.telephony.on_leg_status(
                leg_id=value.leg_id,
                sid=value.sid,
                status=value.status,
                error_code=value.error_code,
                before=before,
            )

        return await self._handle("status", request, parse_leg_status(request.query), act)

    @operation(
        "Twilio: a call's conference started or ended, a participant joined or left",
        right=None,
        body=_form("ConferenceSid", "StatusCallbackEvent", "CallSid", "ParticipantLabel", "SequenceNumber"),
        answer_types=("application/xml",),
        signed=_SIGNED,
        errors=_ERRORS,
    )
    async def conference(self, request: web.Request) -> web.Response:
        async def act(value: ConferenceEvent, before: Before) -> None:
            await self.telephony.on_conference(
                call_id=value.call_id,
                event=value.event,
                conference_sid=value.conference_sid,
                call_sid=value.call_sid,
                label=value.label,
                before=before,
            )

        return await self._handle("conference", request, parse_conference_event(request.query), act)

    @operation(
        "Twilio: a call's recording is ready (it goes on the alert's timeline)",
        right=None,
        body=_form(
            "RecordingSid", "RecordingStatus", "RecordingDuration", "RecordingChannels", "RecordingUrl"
        ),
        answer_types=("application/xml",),
        signed=_SIGNED,
        errors=_ERRORS,
    )
    async def recording(self, request: web.Request) -> web.Response:
        async def act(value: RecordingReport, before: Before) -> None:
            stored = await self.recordings.on_recording(
                call_id=value.call_id,
                sid=value.sid,
                status=value.status,
                duration_s=value.duration_s,
                channels=value.channels,
                media_url=value.url,
                before=before,
            )
            if stored is not None:
                self.metrics.recordings.labels("stored").inc()

        return await self._handle("recording", request, parse_recording(request.query), act)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(STATUS_PATH, self.status)
        app.router.add_post(CONFERENCE_PATH, self.conference)
        app.router.add_post(RECORDING_PATH, self.recording)


__all__ = ["CallWebhooks"]
