"""Telephony's HTTP API: calls and their live stream, click to dial, transfers, third parties, hang-ups,
operators' presence and browser tokens, recordings played through the bridge, answer-time service
levels, and the monthly call audit.

Every handler checks its right first (so the API description's ``x-right`` holds whatever the state of
the feature), then answers 404 ``telephony is not enabled`` while the feature is off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from alarm_centre.alerts.model import AlertChange
from alarm_centre.escalation.service_levels import SERVICE_LEVEL_RIGHT, parse_day
from alarm_centre.http.api import STREAM_CHECK, alert_key, require, source_of
from alarm_centre.http.errors import json_exception, json_response
from alarm_centre.http.inputs import path_id, read_json, validated
from alarm_centre.http.openapi import operation, query
from alarm_centre.ids import row_id
from alarm_centre.store.tx import InvalidRequest
from alarm_centre.telephony.audit import CallAudit, parse_month
from alarm_centre.telephony.calls import Telephony
from alarm_centre.telephony.dialler import AUDIO_TYPE, Dialler, RecordingUnavailable
from alarm_centre.telephony.metrics import TelephonyMetrics
from alarm_centre.telephony.parties import Target
from alarm_centre.telephony.recordings import Recordings
from alarm_centre.telephony.service_levels import call_service_levels
from alarm_centre.telephony.tokens import TokenIssuer
from devices import strict_json

log = logging.getLogger(__name__)

HANDLE = "alerts:handle"
READ = "alerts:read"
#: Supervisors' right to play recordings and run the call audit (alarm_centre/alerts/model.py).
REVIEW = "calls:review"
STATIC_DIR = Path(__file__).parent / "static"
SDK_PATH = "/static/telephony/voice-sdk.js"
STREAM_KEEPALIVE_S = 15.0
#: Ended calls stay in the stream this long, so screens can show how a call ended.
RECENTLY_ENDED_S = 300.0


# -- bodies ------------------------------------------------------------------------------------------
class DialBody(BaseModel):
    """Whom to call: the alert's resident (their own phone), its unit (its SIM), a responder (by position,
    from 0), the emergency services, or a number (E.164)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    to: Literal["resident", "unit", "responder", "emergency", "number"]
    responder: int | None = Field(None, ge=0, le=9)
    number: str | None = Field(None, min_length=3, max_length=16)

    def target(self) -> Target:
        if self.to == "responder" and self.responder is None:
            raise InvalidRequest("responder: give the responder's position (0 is the first)")
        if self.to == "number" and not self.number:
            raise InvalidRequest("number: give the number to dial (E.164)")
        return Target(self.to, self.responder, self.number)


class TransferBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    operator: str = Field(min_length=1, max_length=64)


class PresenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    available: bool


class DrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$")


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    verdict: Literal["meets_standard", "needs_improvement", "cause_for_concern"]
    findings: str = Field("", max_length=4000)


_CALL = {"type": "object", "required": ["id", "alert_id", "direction", "state", "legs", "recordings"]}
_CALLS = {"type": "object", "required": ["calls"], "properties": {"calls": {"type": "array", "items": _CALL}}}
_DAY = {"type": "string", "format": "date"}
_REPORT_QUERY = (
    query("from", _DAY, "first day (default: six days before 'to')"),
    query("to", _DAY, "last day (default: today)"),
    query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}),
)
#: What every route without an id of its own may answer while the feature is off.
OFF = {404: "telephony is not enabled on this bridge"}
_MONTH = query(
    "month",
    {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
    "the month, like 2026-05 (default: this month)",
)


class TelephonyRoutes:
    """The routes; ``enabled`` false answers 404 after the right is checked."""

    def __init__(
        self,
        telephony: Telephony,
        recordings: Recordings,
        audit: CallAudit,
        metrics: TelephonyMetrics,
        *,
        enabled: bool,
        dialler: Dialler | None,
        tokens: TokenIssuer | None,
        sdk_file: str,
        tz: ZoneInfo,
    ) -> None:
        self.telephony = telephony
        self.recordings = recordings
        self.audit = audit
        self.metrics = metrics
        self.enabled = enabled
        self.dialler = dialler
        self.tokens = tokens
        self.sdk_file = sdk_file
        self.tz = tz

    def _on(self) -> None:
        if not self.enabled:
            raise json_exception(web.HTTPNotFound, "not found", "telephony is not enabled on this bridge")

    # -- calls ---------------------------------------------------------------------------------------
    @operation(
        "Calls not yet ended, or every call of one alert",
        right=READ,
        query=(query("alert_id", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "the alert's calls"),),
        answer=_CALLS,
        errors=OFF,
    )
    async def list_calls(self, request: web.Request) -> web.Response:
        require(request, READ)
        self._on()
        raw = request.query.get("alert_id")
        alert_id = row_id(raw) if raw is not None else None
        if raw is not None and alert_id is None:
            raise json_exception(
                web.HTTPUnprocessableEntity, "invalid request", "alert_id must be an alert id (digits)"
            )
        return json_response({"calls": await self.telephony.live_views(alert_id)})

    @operation("One call with its legs and recordings", right=READ, answer=_CALL)
    async def get_call(self, request: web.Request) -> web.Response:
        require(request, READ)
        self._on()
        return json_response(await self.telephony.view(path_id(request, "call_id", "call")))

    @operation(
        "Click to dial: ring your own phone (or console), then the party, in one recorded conference",
        right=HANDLE,
        body=DialBody,
        status=201,
        answer=_CALL,
        errors={
            409: "you are already on a call",
            422: "no number on record for that party, or a field breaks its rule",
        },
    )
    async def dial(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        alert_id = int(alert_key(request))
        body = validated(DialBody, await read_json(request))
        call = await self.telephony.dial(
            alert_id, user=user.name, target=body.target(), source=source_of(request)
        )
        return json_response(await self.telephony.view(int(call["id"])), status=201)

    @operation(
        "Add a third party to a call you are on",
        right=HANDLE,
        body=DialBody,
        answer=_CALL,
        errors={409: "the call is not connected, or you are not on it"},
    )
    async def add_party(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        call_id = path_id(request, "call_id", "call")
        body = validated(DialBody, await read_json(request))
        await self.telephony.add_party(
            call_id, user=user.name, target=body.target(), source=source_of(request)
        )
        return json_response(await self.telephony.view(call_id))

    @operation(
        "Transfer a call you are on to another operator (you leave when they answer)",
        right=HANDLE,
        body=TransferBody,
        answer=_CALL,
        errors={409: "the call is not connected, you are not on it, or they are on another call"},
    )
    async def transfer(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        call_id = path_id(request, "call_id", "call")
        body = validated(TransferBody, await read_json(request))
        await self.telephony.transfer(call_id, user=user.name, to=body.operator, source=source_of(request))
        return json_response(await self.telephony.view(call_id))

    @operation(
        "Hang up: leave a call (it ends when nobody of the centre is left on it)",
        right=HANDLE,
        answer=_CALL,
        errors={409: "you are not on this call"},
    )
    async def hang_up(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        call_id = path_id(request, "call_id", "call")
        await self.telephony.hang_up(call_id, user=user.name, source=source_of(request))
        return json_response(await self.telephony.view(call_id))

    @operation(
        "Decline a call ringing for you: it is offered to the next operator at once",
        right=HANDLE,
        answer=_CALL,
        errors={409: "no such call is ringing for you"},
    )
    async def decline(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        call_id = path_id(request, "call_id", "call")
        await self.telephony.decline(call_id, user=user.name, source=source_of(request))
        return json_response(await self.telephony.view(call_id))

    @operation(right=READ, answer_types=("text/event-stream",), errors=OFF)
    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of calls: ``calls`` (every live call) first, then ``call`` for each change.

        Like the alert stream, it ends with ``expired`` once its credentials stop working.
        """
        user = require(request, READ)
        self._on()
        check = request.get(STREAM_CHECK)
        changed: asyncio.Queue[set[str]] = asyncio.Queue(maxsize=1000)

        def listener(changes: Sequence[AlertChange]) -> None:
            ids = {c.alert_id for c in changes if c.action.value.startswith("call_")}
            if ids:
                try:
                    changed.put_nowait(ids)
                except asyncio.QueueFull:
                    log.warning("call stream of %s fell behind; it will resync", user.name)

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        store = self.telephony.store
        store.add_listener(listener)
        try:
            await response.prepare(request)
            await response.write(b": connected\nretry: 2000\n\n")
            await self._send(response, "calls", {"calls": await self.telephony.live_views()})
            while True:
                try:
                    async with asyncio.timeout(STREAM_KEEPALIVE_S):
                        alerts = await changed.get()
                except TimeoutError:
                    if check is not None and not await check():
                        await response.write(b"event: expired\ndata: {}\n\n")
                        return response
                    await response.write(b": keep-alive\n\n")
                    continue
                while not changed.empty():
                    alerts |= changed.get_nowait()
                now = self.telephony.clock()
                for alert_id in sorted(alerts):
                    key = row_id(alert_id)
                    if key is None:
                        continue
                    for call in await self.telephony.live_views(key):
                        ended = call["ended_at"]
                        if (
                            ended is None
                            or now - datetime.fromisoformat(ended).timestamp() < RECENTLY_ENDED_S
                        ):
                            await self._send(response, "call", call)
        except ConnectionResetError:
            log.debug("call stream reader %s hung up", user.name)
        finally:
            store.remove_listener(listener)
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, kind: str, data: Any) -> None:
        await response.write(f"event: {kind}\ndata: {strict_json.safe_dumps(data)}\n\n".encode())

    # -- operators -----------------------------------------------------------------------------------
    @operation("Your telephony settings and presence, and every operator's", right=READ, errors=OFF)
    async def get_presence(self, request: web.Request) -> web.Response:
        user = require(request, READ)
        self._on()
        me = await self.telephony.presence_of(user.name)
        settings = self.telephony.settings
        return json_response(
            {
                **me,
                "sdk": SDK_PATH if (self.sdk_file and me["via"] == "browser") else None,
                "emergency_number": settings.emergency_number,
                "ring_s": settings.ring_s,
                "operators": await self.telephony.presence_list(),
            }
        )

    @operation(
        "Take calls (available) or not; an available operator may be offered a waiting call at once",
        right=HANDLE,
        body=PresenceBody,
        errors={**OFF, 422: "you take no calls (not in telephony.operators)"},
    )
    async def put_presence(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        body = validated(PresenceBody, await read_json(request))
        return json_response(await self.telephony.set_available(user.name, body.available))

    @operation(
        "An access token for the Voice SDK, for an operator whose console rings in the browser",
        right=HANDLE,
        errors={**OFF, 409: "you take calls on a phone, not in the browser (or tokens are not configured)"},
    )
    async def token(self, request: web.Request) -> web.Response:
        user = require(request, HANDLE)
        self._on()
        line = self.telephony.settings.line(user.name)
        if line is None or not line.browser or self.tokens is None:
            raise json_exception(
                web.HTTPConflict,
                "conflict",
                {"message": f"{user.name} does not take calls in the browser", "holder": None},
            )
        return json_response(self.tokens.issue(user.name), headers={"Cache-Control": "no-store"})

    async def voice_sdk(self, request: web.Request) -> web.StreamResponse:
        """The Twilio Voice SDK file the deployer placed (``telephony.voice_sdk.sdk_file``)."""
        if not self.enabled or not self.sdk_file or not Path(self.sdk_file).is_file():  # noqa: ASYNC240
            raise web.HTTPNotFound()
        return web.FileResponse(
            self.sdk_file, headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"}
        )

    # -- recordings ----------------------------------------------------------------------------------
    @operation(
        "Play a call recording (supervisors): the audio is fetched from Twilio by the bridge, never linked",
        right=REVIEW,
        answer_types=(AUDIO_TYPE,),
        errors={502: "Twilio would not hand over the audio"},
    )
    async def audio(self, request: web.Request) -> web.StreamResponse:
        user = require(request, REVIEW)
        self._on()
        recording_id = path_id(request, "recording_id", "recording")
        row = await self.recordings.for_playing(recording_id, user=user.name, source=source_of(request))
        if self.dialler is None:
            raise json_exception(web.HTTPNotFound, "not found", "twilio is not enabled")
        try:
            async with self.dialler.recording_audio(str(row["sid"])) as upstream:
                response = web.StreamResponse(
                    headers={
                        "Content-Type": AUDIO_TYPE,
                        "Cache-Control": "no-store",
                        "Content-Disposition": f'inline; filename="recording-{recording_id}.mp3"',
                    }
                )
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
                await response.write_eof()
        except RecordingUnavailable as exc:
            status = 404 if exc.status == 404 else 502
            kind = web.HTTPNotFound if status == 404 else web.HTTPBadGateway
            raise json_exception(kind, "recording unavailable", str(exc)) from None
        self.metrics.recordings.labels("played").inc()
        return response

    # -- service levels ------------------------------------------------------------------------------
    async def _report(self, request: web.Request) -> Any:
        require(request, SERVICE_LEVEL_RIGHT)
        today = datetime.now(self.tz).date()
        end = parse_day(request.query.get("to"), today, "to")
        start = parse_day(request.query.get("from"), end - timedelta(days=6), "from")
        return await call_service_levels(self.telephony.store, start=start, end=end, tz=self.tz)

    @operation(
        "Call answer times: offered to answered and signal to speech, per day and operator, against "
        "97.5 %/60 s + 99 %/180 s and 98.5 %/60 s",
        right=SERVICE_LEVEL_RIGHT,
        query=_REPORT_QUERY,
        answer_types=("application/json", "text/csv"),
    )
    async def service_levels(self, request: web.Request) -> web.StreamResponse:
        report = await self._report(request)
        if request.query.get("format") == "csv":
            return self._csv(f"call-service-levels-{report.start}-{report.end}.csv", report.to_csv())
        return json_response(report.to_json())

    @operation(
        "Call answer times as CSV",
        right=SERVICE_LEVEL_RIGHT,
        query=_REPORT_QUERY[:2],
        answer_types=("text/csv",),
    )
    async def service_levels_csv(self, request: web.Request) -> web.StreamResponse:
        report = await self._report(request)
        return self._csv(f"call-service-levels-{report.start}-{report.end}.csv", report.to_csv())

    @staticmethod
    def _csv(name: str, text: str) -> web.Response:
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    # -- the call audit ------------------------------------------------------------------------------
    def _month(self, request: web.Request) -> str:
        return parse_month(request.query.get("month") or datetime.now(self.tz).strftime("%Y-%m"))

    @operation(
        "The month's call audit: the calls drawn per handler and the findings",
        right=REVIEW,
        query=(_MONTH,),
        errors=OFF,
    )
    async def get_audit(self, request: web.Request) -> web.Response:
        require(request, REVIEW)
        self._on()
        return json_response((await self.audit.month(self._month(request))).to_json())

    @operation(
        "Draw the month's calls to review for every handler who has none drawn yet",
        right=REVIEW,
        body=DrawBody,
        answer={"type": "object"},
        errors=OFF,
    )
    async def draw(self, request: web.Request) -> web.Response:
        user = require(request, REVIEW)
        self._on()
        body = validated(DrawBody, await read_json(request))
        return json_response((await self.audit.draw(body.month, by=user.name)).to_json())

    @operation(
        "Record the review of one drawn call: a verdict and the findings",
        right=REVIEW,
        body=ReviewBody,
        answer={"type": "object"},
    )
    async def review(self, request: web.Request) -> web.Response:
        user = require(request, REVIEW)
        self._on()
        review_id = path_id(request, "review_id", "review")
        body = validated(ReviewBody, await read_json(request))
        return json_response(
            await self.audit.review(
                review_id, verdict=body.verdict, findings=body.findings, reviewer=user.name
            )
        )

    @operation(
        "The month's call audit as CSV", right=REVIEW, query=(_MONTH,), answer_types=("text/csv",), errors=OFF
    )
    async def audit_csv(self, request: web.Request) -> web.StreamResponse:
        require(request, REVIEW)
        self._on()
        month = self._month(request)
        return self._csv(f"call-audit-{month}.csv", (await self.audit.month(month)).to_csv())

    def add_routes(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/api/v1/calls", self.list_calls)
        router.add_get("/api/v1/calls/stream", self.stream)
        router.add_get("/api/v1/calls/service-levels", self.service_levels)
        router.add_get("/api/v1/calls/service-levels.csv", self.service_levels_csv)
        router.add_get("/api/v1/calls/{call_id}", self.get_call)
        router.add_post("/api/v1/calls/{call_id}/parties", self.add_party)
        router.add_post("/api/v1/calls/{call_id}/transfer", self.transfer)
        router.add_post("/api/v1/calls/{call_id}/hangup", self.hang_up)
        router.add_post("/api/v1/calls/{call_id}/decline", self.decline)
        router.add_post("/api/v1/alerts/{alert_id}/calls", self.dial)
        router.add_get("/api/v1/telephony/presence", self.get_presence)
        router.add_put("/api/v1/telephony/presence", self.put_presence)
        router.add_get("/api/v1/telephony/token", self.token)
        router.add_get("/api/v1/recordings/{recording_id}/audio", self.audio)
        router.add_get("/api/v1/call-audit", self.get_audit)
        router.add_get("/api/v1/call-audit.csv", self.audit_csv)
        router.add_post("/api/v1/call-audit/draw", self.draw)
        router.add_put("/api/v1/call-audit/reviews/{review_id}", self.review)
        router.add_get(SDK_PATH, self.voice_sdk)
        router.add_static("/static/telephony/", STATIC_DIR, append_version=False)
