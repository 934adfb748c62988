"""HTTP API v1 on aiohttp: alerts, the live stream, health and metrics (the registry: registry_api.py).

Errors are always JSON ``{"error": str, "detail": ...}`` with the right status, never a stack trace
(``errors.py``); input is read by one rule per kind (``inputs.py``); the description is built from the
routes (``openapi.py``). API clients authenticate with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from alarm_centre.alerts.feed import ACCESS_CHANGED, AlertFeed
from alarm_centre.alerts.lifecycle import OPERATOR_OUTCOMES, Source
from alarm_centre.alerts.model import User
from alarm_centre.http.clients import client_address
from alarm_centre.http.errors import (
    BODY_TIMEOUT,
    ON_ERROR,
    body_in_time,
    errors_as_json,
    json_error,
    json_response,
    json_safety_headers,
)
from alarm_centre.http.inputs import path_id, query_int, read_json, validated
from alarm_centre.http.openapi import describe, operation, outcome_guide, query, ref
from alarm_centre.privacy import disclosure as disclose
from alarm_centre.privacy.reads import Viewer
from alarm_centre.store.base import AlertStore
from devices import strict_json

log = logging.getLogger(__name__)

STORE: web.AppKey[AlertStore] = web.AppKey("store", AlertStore)
FEED: web.AppKey[AlertFeed] = web.AppKey("feed", AlertFeed)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
READINESS: web.AppKey[Callable[[], Awaitable[list[str]]]] = web.AppKey("readiness")
#: Brings gauges read from the store up to date before /metrics answers (the scrape is their clock).
ON_SCRAPE: web.AppKey[Callable[[], Awaitable[None]]] = web.AppKey("on_scrape")
USER_KEY: web.RequestKey[User] = web.RequestKey("user", User)
#: Set by the console's session middleware so the audit trail says "console" rather than "api".
VIA_CONSOLE: web.RequestKey[bool] = web.RequestKey("via_console", bool)
#: Set by the authenticating middleware: the live stream ends once this answers False (signed out, expired,
#: disabled, new role or token). Asked when the user's access changes and at every keep-alive.
STREAM_CHECK: web.RequestKey[Callable[[], Awaitable[bool]]] = web.RequestKey("stream_check")
#: Paths that need no bearer token (the console and webhooks authenticate their own way).
PUBLIC_PREFIXES = (
    "/healthz",
    "/metrics",
    "/api/v1/openapi.json",
    "/alexa",
    "/twilio/",
    "/console",
    "/static/",
    "/login",
    "/logout",
)


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith(PUBLIC_PREFIXES) or not request.path.startswith("/api/"):
        return await handler(request)
    if USER_KEY not in request:
        header = request.headers.get("Authorization", "")
        match = re.fullmatch(r"Bearer ([A-Za-z0-9_\-]{16,128})", header.strip())
        if match is None:
            return json_error(401, "unauthorized", "send Authorization: Bearer <token>")
        token = match.group(1)
        store = request.app[STORE]
        user = await store.users.for_token(token)
        if user is None:
            return json_error(401, "unauthorized", "unknown or disabled token")
        request[USER_KEY] = user

        async def same_user(started_as: User = user) -> bool:
            try:
                return await store.users.for_token(token) == started_as
            except Exception as exc:  # the store is down or closing: end the stream; the client reconnects
                log.warning("could not check an API token: %s", exc)
                return False

        request[STREAM_CHECK] = same_user
    return await handler(request)


def require(request: web.Request, right: str) -> User:
    """The signed-in user, if they hold ``right``; a JSON 403 otherwise."""
    user: User | None = request.get(USER_KEY)
    if user is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "unauthorized", "detail": None}), content_type="application/json"
        )
    if not user.can(right):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "forbidden", "detail": f"role {user.role.value} may not {right}"}),
            content_type="application/json",
        )
    return user


def source_of(request: web.Request) -> str:
    return Source.CONSOLE if request.get(VIA_CONSOLE) else Source.API


def viewer(request: web.Request, right: str) -> Viewer:
    """The signed-in user holding ``right`` (a JSON 401/403 otherwise) as the viewer of what the route
    answers: name, role, console or API, and the client's address (the audit of reads)."""
    user = require(request, right)
    return Viewer(user.name, user.role, str(source_of(request)), client_address(request))


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The store judges the code (a 422 listing the codes); the description lists them as an enum.
    outcome: str = Field(
        min_length=1,
        max_length=40,
        json_schema_extra={
            "enum": list(OPERATOR_OUTCOMES),
            "description": "why the alert was resolved:\n" + outcome_guide(),
        },
    )
    note: str | None = Field(None, max_length=2000)


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=64)


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000)


# -- handlers ------------------------------------------------------------------------------------
def alert_key(request: web.Request) -> str:
    """The ``{alert_id}`` of the path, checked by the one id rule (a JSON 404 if it cannot name an alert)."""
    return str(path_id(request, "alert_id", "alert"))


@operation(
    "Alerts in queue order (priority, then age)",
    right="alerts:read",
    answer=ref("AlertPage"),
    query=(
        query(
            "state",
            {
                "type": "string",
                "enum": ["open", "raised", "acknowledged", "resolved", "all"],
                "default": "open",
            },
            "open means raised or acknowledged",
        ),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"),
        query("cursor", {"type": "string"}, "next_cursor from the previous page"),
    ),
)
async def list_alerts(request: web.Request) -> web.Response:
    who = viewer(request, "alerts:read")
    state = request.query.get("state", "open")
    limit = query_int(request, "limit", 100, 1, 1000)
    store = request.app[STORE]
    alerts, cursor = await store.alerts.list_alerts(
        state=state, limit=limit, cursor=request.query.get("cursor") or None
    )
    shown = await disclose.alerts(store, who, [a.to_json() for a in alerts], purpose="api.alerts")
    return json_response({"alerts": shown, "next_cursor": cursor})


@operation("One alert with its timeline", right="alerts:read", answer=ref("AlertWithTimeline"))
async def get_alert(request: web.Request) -> web.Response:
    who = viewer(request, "alerts:read")
    store = request.app[STORE]
    alert, timeline = await store.get_alert(alert_key(request))
    body = {**alert.to_json(), "timeline": [t.to_json() for t in timeline]}
    (shown,) = await disclose.alerts(store, who, [body], purpose="api.alert")
    return json_response(shown)


@operation(
    "Claim an alert (no body)",
    right="alerts:handle",
    answer=ref("Alert"),
    errors={409: "held by another operator, or already resolved"},
)
async def acknowledge(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    alert = await request.app[STORE].acknowledge(
        alert_key(request), actor=user.name, source=source_of(request)
    )
    return json_response(alert.to_json())


@operation(
    "Resolve an acknowledged alert with an outcome code",
    right="alerts:handle",
    body=ResolveBody,
    answer=ref("Alert"),
    errors={
        409: "not held by you, or not acknowledged",
        422: "an unknown outcome code (detail lists the codes), or a field breaks its rule",
    },
)
async def resolve(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    body = validated(ResolveBody, await read_json(request))
    alert = await request.app[STORE].resolve(
        alert_key(request), outcome=body.outcome, note=body.note, actor=user.name, source=source_of(request)
    )
    return json_response(alert.to_json())


@operation(
    "Hand an alert to another operator",
    right="alerts:reassign",
    body=ReassignBody,
    answer=ref("Alert"),
    errors={409: "already resolved", 422: "no such operator, or a field breaks its rule"},
)
async def reassign(request: web.Request) -> web.Response:
    user = require(request, "alerts:reassign")
    body = validated(ReassignBody, await read_json(request))
    alert = await request.app[STORE].alerts.reassign(
        alert_key(request), to=body.to, actor=user.name, source=source_of(request)
    )
    return json_response(alert.to_json())


@operation(
    "Add a note to an alert's timeline",
    right="alerts:handle",
    body=NoteBody,
    status=201,
    answer={"type": "object", "properties": {"ok": {"const": True}}},
)
async def add_note(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    body = validated(NoteBody, await read_json(request))
    await request.app[STORE].alerts.add_note(
        alert_key(request), note=body.note, actor=user.name, source=source_of(request)
    )
    return json_response({"ok": True}, status=201)


#: Seconds between keep-alive comments on an idle stream (each also re-checks the credentials).
STREAM_KEEPALIVE_S = 15.0
#: Messages a stream writes before it gives the event loop a turn. A queue holding thousands (a flood)
#: is otherwise written out in one step: ``queue.get`` does not wait while the queue holds messages, and
#: ``write`` only waits when the socket's buffer is full. In a storm such steps held the loop for
#: 60-140 ms, with a fall's ack and other nodes' changes waiting behind them.
STREAM_SHARE = 20


@operation(right="alerts:read", answer_types=("text/event-stream",))
async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``alert`` event per change; ``resync`` when the reader fell behind.

    The stream ends with an ``expired`` event as soon as its credentials stop working: the feed tells it
    when its user's access changed (on any node), and each keep-alive checks again. A client that
    hangs up is normal and ends the stream quietly.
    """
    user = require(request, "alerts:read")
    check = request.get(STREAM_CHECK)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b": connected\nretry: 2000\n\n")
        async with request.app[FEED].subscribe(user=user.name) as queue:
            written = 0
            while True:
                if written >= STREAM_SHARE:  # a turn for the loop before the next (most urgent) message
                    written = 0
                    await asyncio.sleep(0)
                try:
                    async with asyncio.timeout(STREAM_KEEPALIVE_S):
                        message = await queue.get()
                except TimeoutError:
                    message = None
                if message is None or message is ACCESS_CHANGED:
                    if check is not None and not await check():
                        await response.write(b"event: expired\ndata: {}\n\n")
                        return response
                    if message is None:
                        await response.write(b": keep-alive\n\n")
                    continue
                kind = "resync" if message.get("resync") else "alert"
                data = strict_json.safe_dumps(message.get("alert", message))
                await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
                written += 1
    except ConnectionResetError:  # the client went away (aiohttp's ClientConnectionResetError is one)
        log.debug("stream reader %s hung up", user.name)
        return response


_READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "problems": {"type": "array", "items": {"type": "string"}},
    },
}


@operation(
    "Ready: subscribed to device events and the store accepts writes",
    right=None,
    answer=_READINESS,
    other={
        503: {
            "description": "not ready, with the problems",
            "content": {"application/json": {"schema": _READINESS}},
        }
    },
)
async def healthz(request: web.Request) -> web.Response:
    problems = await request.app[READINESS]()
    if problems:
        return json_response({"status": "not ready", "problems": problems}, status=503)
    return json_response({"status": "ready"})


@operation("Prometheus metrics (text format)", right=None, answer_types=("text/plain",))
async def metrics(request: web.Request) -> web.Response:
    refresh = request.app.get(ON_SCRAPE)
    if refresh is not None:
        await refresh()
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@operation("This description (OpenAPI 3.1)", right=None, answer={"type": "object"})
async def openapi(request: web.Request) -> web.Response:
    return json_response(describe(request.app))


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/alerts", list_alerts)
    app.router.add_get("/api/v1/alerts/{alert_id}", get_alert)
    app.router.add_post("/api/v1/alerts/{alert_id}/acknowledge", acknowledge)
    app.router.add_post("/api/v1/alerts/{alert_id}/resolve", resolve)
    app.router.add_post("/api/v1/alerts/{alert_id}/reassign", reassign)
    app.router.add_post("/api/v1/alerts/{alert_id}/notes", add_note)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


def make_app(
    store: AlertStore,
    feed: AlertFeed,
    registry: CollectorRegistry,
    readiness: Callable[[], Awaitable[list[str]]],
    *,
    max_body_bytes: int = 65536,
    on_error: Callable[[int], None] | None = None,
    body_timeout_s: float = 30.0,
) -> web.Application:
    """The bridge's aiohttp application with the v1 API mounted."""
    app = web.Application(
        middlewares=[errors_as_json, body_in_time, bearer_auth], client_max_size=max_body_bytes
    )
    app[BODY_TIMEOUT] = body_timeout_s
    app[STORE] = store
    app[FEED] = feed
    app[REGISTRY] = registry
    app[READINESS] = readiness
    if on_error is not None:
        app[ON_ERROR] = on_error
    app.on_response_prepare.append(json_safety_headers)
    add_api_routes(app)
    return app
