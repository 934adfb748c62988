"""The console's own routes: the queue page and the small JSON views the queue needs.

Alert actions (acknowledge, note, resolve) and the live stream are the ordinary API endpoints;
the session middleware authenticates the browser for them.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from alarm_centre.alerts.lifecycle import Outcome
from alarm_centre.alerts.model import ROLE_RIGHTS
from alarm_centre.alerts.model import iso as iso_time
from alarm_centre.console.context import alert_context, resident_names
from alarm_centre.console.pages import QUEUE_SCRIPTS, nav_for, page_response, require_page
from alarm_centre.console.signin import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_KEY,
    SESSIONS,
    SETTINGS,
    login,
    login_form,
    logout,
    session_auth,
)
from alarm_centre.console.templates import render
from alarm_centre.http.api import STORE, alert_key, require, viewer
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.privacy import disclosure as disclose
from alarm_centre.sessions import Session

STATIC_DIR = Path(__file__).parent / "static"
#: Outcome codes offered in the resolve dialog, with the words operators see.
OUTCOME_LABELS: dict[str, str] = {
    Outcome.RESIDENT_OK: "Resident OK, no help needed",
    Outcome.RESPONDER_SENT: "Responder sent (contacts the resident's responders)",
    Outcome.AMBULANCE: "Ambulance called",
    Outcome.FIRE_SERVICE: "Fire service called",
    Outcome.POLICE: "Police called",
    Outcome.FALSE_ALARM: "False alarm",
    Outcome.NO_RESPONSE_ESCALATED: "No response, escalated",
    Outcome.TECHNICAL_FIXED: "Technical fault dealt with",
    Outcome.TEST: "Test alarm",
}


async def queue_page(request: web.Request) -> web.StreamResponse:
    require_page(request, "alerts:read")
    scripts = ("/static/console/console.js", *request.app.get(QUEUE_SCRIPTS, ()))
    return page_response(request, title="Alert queue", body=render("queue.html"), scripts=scripts)


async def me(request: web.Request) -> web.Response:
    """Who is signed in, what they may do, and the settings the queue page needs."""
    user = require(request, "alerts:read")
    session = request.get(SESSION_KEY)
    return json_response(
        {
            "name": user.name,
            "role": user.role.value,
            "rights": sorted(ROLE_RIGHTS[user.role]),
            "csrf": session.csrf if session else None,
            "csrf_header": CSRF_HEADER,
            "expires_at": iso_time(session.expires_at) if session else None,
            "session": _session_times(request, session),
            "sound": request.app[SETTINGS].sound,
            "outcomes": [{"code": str(code), "label": label} for code, label in OUTCOME_LABELS.items()],
            "pages": [{"path": p.path, "title": p.title} for p in nav_for(request, user)],
        },
        headers={"Cache-Control": "no-store"},
    )


def _session_times(request: web.Request, session: Session | None) -> dict[str, float] | None:
    """What the session-end warning needs: seconds left before each deadline (counted on the server, so
    a workstation's wrong clock does not matter), the idle limit, and how far "Stay signed in" reaches."""
    if session is None:
        return None
    sessions = request.app[SESSIONS]
    now = sessions.clock()
    return {
        "expires_in_s": max(0.0, session.expires_at - now),
        "idle_left_s": max(0.0, session.idle_deadline - now),
        "idle_timeout_s": sessions.idle_timeout_s,
        "extension_s": sessions.extension_s,
    }


async def extend_session(request: web.Request) -> web.Response:
    """``POST /console/api/session/extend``: the answer to the warning before the session ends."""
    require(request, "alerts:read")  # console paths take no bearer tokens: a signed-in session is here
    extended = await request.app[SESSIONS].extend(request.cookies.get(SESSION_COOKIE, ""))
    if extended is None:  # it ended between the middleware's look and ours
        return json_error(401, "unauthorized", "the session has ended: sign in again")
    return json_response(
        {"session": _session_times(request, extended)}, headers={"Cache-Control": "no-store"}
    )


async def context(request: web.Request) -> web.Response:
    """The resident's card and the units' status beside an alert: the card as the user's role may see
    it (need to know), and the read recorded."""
    who = viewer(request, "alerts:read")
    store = request.app[STORE]
    body = await alert_context(store, alert_key(request))
    if body["resident"] is not None:
        body["resident"] = await disclose.card(
            store,
            who,
            str(body["resident"]["id"]),
            body["resident"],
            purpose="console.alert_context",
            alert_id=int(body["alert_id"]),
        )
    return json_response(body, headers={"Cache-Control": "no-store"})


async def names(request: web.Request) -> web.Response:
    who = viewer(request, "alerts:read")
    ids = [i for i in request.query.get("ids", "").split(",") if i][:200]
    store = request.app[STORE]
    found = await resident_names(store, ids)
    return json_response(await disclose.names(store, who, found, purpose="console.queue_names"))


async def console_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console" if SESSION_KEY in request else "/login")


def add_console_routes(app: web.Application) -> None:
    """Mount the console on ``app`` and put the session middleware in front of bearer-token auth."""
    middlewares = app.middlewares
    position = next(
        (n for n, m in enumerate(middlewares) if getattr(m, "__name__", "") == "bearer_auth"),
        len(middlewares),
    )
    middlewares.insert(position, session_auth)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/console", queue_page)
    app.router.add_get("/console/", console_root)
    app.router.add_get("/console/api/me", me)
    app.router.add_post("/console/api/session/extend", extend_session)
    app.router.add_get("/console/api/alerts/{alert_id}/context", context)
    app.router.add_get("/console/api/residents", names)
    app.router.add_static("/static/console/", STATIC_DIR, append_version=False)
