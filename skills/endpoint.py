"""``POST /alexa``: verify, do the store work, then let the ask-sdk-core skill build the answer.

Order, for every request: (1) read at most the size cap of body; (2) :class:`AlexaVerifier` (400, 413,
503 as JSON ``{"error", "detail"}``, nothing else happens); (3) deserialise into ask-sdk-model's
``RequestEnvelope`` (400 if it does not fit); (4) await the store work chosen by request type and intent
(:func:`work_for`); (5) ``skill.invoke(request_envelope=..., context=result)`` -- synchronous and I/O-free;
(6) answer the serialised ``ResponseEnvelope``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from ask_sdk_core.serialize import DefaultSerializer
from ask_sdk_core.skill import CustomSkill
from ask_sdk_model.request_envelope import RequestEnvelope
from prometheus_client import CollectorRegistry, Counter

from alarm_centre.http.errors import json_response
from alarm_centre.http.openapi import Body, operation
from devices import strict_json
from skills.handlers import build_skill
from skills.verification import AlexaRequestRejected, AlexaVerifier, RequestTooLarge
from skills.voice import NO_WORK, Caller, VoiceResult, VoiceService

log = logging.getLogger(__name__)

ALEXA_PATH = "/alexa"
_serializer = DefaultSerializer()

#: Store work for each intent that needs some; every other request needs none.
INTENT_WORK: dict[str, Callable[[VoiceService, Caller], Awaitable[VoiceResult]]] = {
    "TriggerHelpIntent": VoiceService.trigger_help,
    "HelpStatusIntent": VoiceService.help_status,
    "CancelHelpIntent": VoiceService.cancel_help,
    "CheckInIntent": VoiceService.check_in,
}


def _json_error(status: int, error: str, detail: Any) -> web.Response:
    return json_response({"error": error, "detail": detail}, status=status)


async def work_for(service: VoiceService, envelope: Mapping[str, Any]) -> VoiceResult:
    """Await the store work a verified request needs, chosen by request type and intent name."""
    request = envelope.get("request") or {}
    if request.get("type") != "IntentRequest":
        return NO_WORK
    intent = request.get("intent")
    name = intent.get("name") if isinstance(intent, Mapping) else None
    work = INTENT_WORK.get(name) if isinstance(name, str) else None
    if work is None:
        return NO_WORK
    return await work(service, Caller.from_envelope(envelope))


ALEXA_SIGNED = "Amazon's Signature-256 and SignatureCertChainUrl headers (skills/verification.py)"


class AlexaEndpoint:
    """The aiohttp handler for ``POST /alexa``; add it with :meth:`add_routes`."""

    def __init__(
        self,
        verifier: AlexaVerifier,
        service: VoiceService,
        *,
        skill: CustomSkill | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.verifier = verifier
        self.service = service
        self.skill = skill or build_skill(verifier.skill_id)
        self.requests = Counter(
            "telecare_alexa_requests", "Alexa requests by outcome", ["outcome"], registry=registry
        )

    def add_routes(self, app: web.Application, path: str = ALEXA_PATH) -> None:
        app.router.add_post(path, self.handle)

    async def _read_body(self, request: web.Request) -> bytes:
        cap = self.verifier.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise RequestTooLarge(f"body is over {cap} bytes")
        body = await request.content.read(cap + 1)  # never buffer more than the cap
        if len(body) > cap:
            raise RequestTooLarge(f"body is over {cap} bytes")
        return body

    @operation(
        "Alexa skill requests (the skill's endpoint)",
        right=None,
        signed=ALEXA_SIGNED,
        body=Body(
            {
                "type": "object",
                "required": ["version", "request"],
                "properties": {
                    "version": {"type": "string"},
                    "session": {"type": "object"},
                    "context": {"type": "object"},
                    "request": {"type": "object", "required": ["type", "requestId", "timestamp"]},
                },
            }
        ),
        answer={"type": "object"},
        errors={
            400: "a failed signature, certificate, timestamp or skill-id check, or a malformed envelope",
            413: "the body is over alexa.max_body_bytes",
            503: "Amazon's certificate chain could not be fetched",
        },
    )
    async def handle(self, request: web.Request) -> web.Response:
        try:
            raw = await self._read_body(request)
            envelope = await self.verifier.verify(request.headers, raw)
        except AlexaRequestRejected as exc:
            self.requests.labels(f"rejected_{exc.http_status}").inc()
            log.warning(
                "Alexa request rejected (%d) from %s: %s", exc.http_status, request.remote, exc.reason
            )
            error = {413: "request body too large", 503: "certificate unavailable"}.get(
                exc.http_status, "request verification failed"
            )
            return _json_error(exc.http_status, error, exc.reason)
        try:
            request_envelope = _serializer.deserialize(raw.decode("utf-8"), RequestEnvelope)
        except Exception as exc:  # ask-sdk raises its own SerializationException
            self.requests.labels("rejected_400").inc()
            return _json_error(400, "malformed request envelope", str(exc)[:200])
        result = await work_for(self.service, envelope)
        response = self.skill.invoke(request_envelope=request_envelope, context=result)
        self.requests.labels(f"{result.action}_{result.status}").inc()
        body = strict_json.safe_dumps(_serializer.serialize(response))
        return web.Response(text=body, content_type="application/json")
