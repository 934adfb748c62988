"""HTTP API v1 on aiohttp: alerts, the live stream, health and metrics (the registry: registry_api.py).

Errors are always JSON ``{"error": str, "detail": ...}`` with the right status; never a stack trace.
API clients authenticate with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alarm_centre.feed import AlertFeed
from alarm_centre.lifecycle import IllegalTransition, Source
from alarm_centre.model import User
from alarm_centre.openapi import describe
from alarm_centre.store.base import AlertStore, Conflict, InvalidRequest, NotFound

log = logging.getLogger(__name__)

STORE: web.AppKey[AlertStore] = web.AppKey("store", AlertStore)
FEED: web.AppKey[AlertFeed] = web.AppKey("feed", AlertFeed)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
READINESS: web.AppKey[Callable[[], Awaitable[list[str]]]] = web.AppKey("readiness")
ON_ERROR: web.AppKey[Callable[[int], None]] = web.AppKey("on_error")
#: Brings gauges read from the store up to date before /metrics answers (the scrape is their clock).
ON_SCRAPE: web.AppKey[Callable[[], Awaitable[None]]] = web.AppKey("on_scrape")
USER_KEY: web.RequestKey[User] = web.RequestKey("user", User)
#: Set by the console's session middleware so the audit trail says "console" rather than "api".
VIA_CONSOLE: web.RequestKey[bool] = web.RequestKey("via_console", bool)
#: Set by the console's session middleware: the live stream ends once this answers False (logout, expiry).
STREAM_CHECK: web.RequestKey[Callable[[], Awaitable[bool]]] = web.RequestKey("stream_check")
#: Paths that need no bearer token (the console and webhooks authenticate their own way).
PUBLIC_PREFIXES = ("/healthz", "/metrics", "/api/v1/openapi.json", "/alexa", "/twilio/", "/console",
                   "/static/", "/login", "/logout")


def json_error(status: int, error: str, detail: Any = None) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json" and exc.text:
            response = web.Response(status=exc.status, text=exc.text, content_type="application/json",
                                    headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
        else:
            reason = {404: "not found", 405: "method not allowed", 413: "request body too large"}.get(
                exc.status, exc.reason.lower())
            response = json_error(exc.status, reason, {"path": request.path})
    except NotFound as exc:
        response = json_error(404, "not found", str(exc))
    except Conflict as exc:
        response = json_error(409, "conflict", {"message": str(exc), "holder": exc.holder})
    except IllegalTransition as exc:
        response = json_error(409, "illegal transition", {"message": str(exc), "state": exc.state.value})
    except InvalidRequest as exc:
        response = json_error(422, "invalid request", str(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = json_error(500, "internal error", "the bridge logged the details")
    if response.status >= 400:
        on_error = request.app.get(ON_ERROR)
        if on_error is not None:
            on_error(response.status)
    return response


@web.middleware
async def bearer_auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    if request.path.startswith(PUBLIC_PREFIXES) or not request.path.startswith("/api/"):
        return await handler(request)
    if USER_KEY not in request:
        header = request.headers.get("Authorization", "")
        match = re.fullmatch(r"Bearer ([A-Za-z0-9_\-]{16,128})", header.strip())
        if match is None:
            return json_error(401, "unauthorized", "send Authorization: Bearer <token>")
        user = await request.app[STORE].user_for_token(match.group(1))
        if user is None:
            return json_error(401, "unauthorized", "unknown or disabled token")
        request[USER_KEY] = user
    return await handler(request)


def require(request: web.Request, right: str) -> User:
    """The signed-in user, if they hold ``right``; a JSON 403 otherwise."""
    user: User | None = request.get(USER_KEY)
    if user is None:
        raise web.HTTPUnauthorized(text=json.dumps({"error": "unauthorized", "detail": None}),
                                   content_type="application/json")
    if not user.can(right):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "forbidden", "detail": f"role {user.role.value} may not {right}"}),
            content_type="application/json")
    return user


def source_of(request: web.Request) -> str:
    return Source.CONSOLE if request.get(VIA_CONSOLE) else Source.API


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400/415 naming what is wrong."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "unsupported media type", "detail": "send application/json"}),
            content_type="application/json")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": "malformed JSON", "detail": str(exc)}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "malformed JSON", "detail": "expected an object"}),
                                 content_type="application/json")
    return body


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        detail = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise web.HTTPUnprocessableEntity(text=json.dumps({"error": "invalid request", "detail": detail}),
                                          content_type="application/json") from None


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field(min_length=1, max_length=40)
    note: str | None = Field(None, max_length=2000)


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=64)


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=2000)


# -- handlers ------------------------------------------------------------------------------------
async def list_alerts(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    state = request.query.get("state", "open")
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        return json_error(422, "invalid request", "limit must be a whole number from 1 to 1000")
    alerts, cursor = await request.app[STORE].list_alerts(
        state=state, limit=int(raw_limit), cursor=request.query.get("cursor") or None)
    return web.json_response({"alerts": [a.to_json() for a in alerts], "next_cursor": cursor})


async def get_alert(request: web.Request) -> web.Response:
    require(request, "alerts:read")
    alert, timeline = await request.app[STORE].get_alert(request.match_info["alert_id"])
    return web.json_response({**alert.to_json(), "timeline": [t.to_json() for t in timeline]})


async def acknowledge(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    alert = await request.app[STORE].acknowledge(request.match_info["alert_id"], actor=user.name,
                                                 source=source_of(request))
    return web.json_response(alert.to_json())


async def resolve(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    body = validated(ResolveBody, await read_json(request))
    alert = await request.app[STORE].resolve(request.match_info["alert_id"], outcome=body.outcome,
                                             note=body.note, actor=user.name, source=source_of(request))
    return web.json_response(alert.to_json())


async def reassign(request: web.Request) -> web.Response:
    user = require(request, "alerts:reassign")
    body = validated(ReassignBody, await read_json(request))
    alert = await request.app[STORE].reassign(request.match_info["alert_id"], to=body.to, actor=user.name,
                                              source=source_of(request))
    return web.json_response(alert.to_json())


async def add_note(request: web.Request) -> web.Response:
    user = require(request, "alerts:handle")
    body = validated(NoteBody, await read_json(request))
    await request.app[STORE].add_note(request.match_info["alert_id"], note=body.note, actor=user.name,
                                      source=source_of(request))
    return web.json_response({"ok": True}, status=201)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``alert`` event per change; ``resync`` when the reader fell behind."""
    require(request, "alerts:read")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b": connected\nretry: 2000\n\n")
    async with request.app[FEED].subscribe() as queue:
        while True:
            try:
                async with asyncio.timeout(15):
                    message = await queue.get()
            except TimeoutError:
                check = request.get(STREAM_CHECK)
                if check is not None and not await check():
                    await response.write(b"event: expired\ndata: {}\n\n")
                    return response
                await response.write(b": keep-alive\n\n")
                continue
            kind = "resync" if message.get("resync") else "alert"
            data = json.dumps(message.get("alert", message), separators=(",", ":"))
            await response.write(f"event: {kind}\ndata: {data}\n\n".encode())


async def healthz(request: web.Request) -> web.Response:
    problems = await request.app[READINESS]()
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    refresh = request.app.get(ON_SCRAPE)
    if refresh is not None:
        await refresh()
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(describe(request.app))


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
    store: AlertStore, feed: AlertFeed, registry: CollectorRegistry,
    readiness: Callable[[], Awaitable[list[str]]], *, max_body_bytes: int = 65536,
    on_error: Callable[[int], None] | None = None,
) -> web.Application:
    """The bridge's aiohttp application with the v1 API mounted."""
    app = web.Application(middlewares=[errors_as_json, bearer_auth], client_max_size=max_body_bytes)
    app[STORE] = store
    app[FEED] = feed
    app[REGISTRY] = registry
    app[READINESS] = readiness
    if on_error is not None:
        app[ON_ERROR] = on_error
    add_api_routes(app)
    return app
