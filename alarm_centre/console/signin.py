"""Signing in and out of the console, and the session middleware that lets the API serve the console.

Cookies: ``tc_session`` (the session token; HttpOnly, SameSite=Strict, Path=/, Secure when configured)
and ``tc_login`` (a one-time CSRF value for the sign-in form, double-submitted in a hidden field).
A session-authenticated request that changes state (POST, PUT, PATCH, DELETE) must send the session's
CSRF token in the ``X-CSRF-Token`` header, or it is refused with 403. Bearer-token clients need no CSRF
token (a browser never attaches a bearer token on its own), and a request that carries an
``Authorization`` header is never authenticated by its cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from alarm_centre.alerts.model import User
from alarm_centre.console.pages import PAGE_HEADERS
from alarm_centre.console.templates import render
from alarm_centre.http.api import STORE, STREAM_CHECK, USER_KEY, VIA_CONSOLE
from alarm_centre.http.clients import TRUSTED_PROXIES as TRUSTED_PROXIES
from alarm_centre.http.clients import client_address  # shared with the audit of reads
from alarm_centre.http.clients import forwarded_client as forwarded_client
from alarm_centre.http.clients import trusted_networks as trusted_networks
from alarm_centre.http.errors import json_error, json_response
from alarm_centre.sessions import Session, SessionStore, SignInThrottle, check_login

SESSION_COOKIE = "tc_session"
LOGIN_COOKIE = "tc_login"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_NAME = 64
MAX_PASSWORD = 1024


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    session_ttl_s: float = 43200.0
    idle_timeout_s: float = 1800.0
    secure_cookies: bool = False
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_window_s: float = 300.0
    login_max_delay_s: float = 10.0
    #: Peers (proxies) whose X-Forwarded-For is believed, as addresses or networks.
    trusted_proxies: tuple[str, ...] = ()
    sound: bool = True


SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("console_settings", ConsoleSettings)
SESSIONS: web.AppKey[SessionStore] = web.AppKey("console_sessions", SessionStore)
LIMITER: web.AppKey[SignInThrottle] = web.AppKey("sign_in_throttle", SignInThrottle)
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("console_session", Session)


@web.middleware
async def session_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Authenticate by session cookie (when no Authorization header) and enforce CSRF on unsafe methods."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and "Authorization" not in request.headers:
        sessions = request.app[SESSIONS]
        session = await sessions.lookup(token)
        if session is not None:
            request[USER_KEY] = session.user
            request[VIA_CONSOLE] = True
            request[SESSION_KEY] = session

            async def same_user(started_as: User = session.user) -> bool:
                return await sessions.live_user(token) == started_as

            request[STREAM_CHECK] = same_user
            if request.method not in SAFE_METHODS and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
                return json_error(
                    403, "forbidden", f"missing or wrong CSRF token: send the {CSRF_HEADER} header"
                )
    return await handler(request)


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, *, path: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].secure_cookies,
    )


def _login_page(
    request: web.Request,
    *,
    name: str = "",
    message: str = "",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    csrf = secrets.token_urlsafe(24)
    text = render(
        "login.html", csrf=csrf, name=name, message=message, message_hidden="" if message else "hidden"
    )
    response = web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        status=status,
        headers={**PAGE_HEADERS, **(headers or {})},
    )
    _set_cookie(request, response, LOGIN_COOKIE, csrf, path="/login", max_age=3600)
    return response


#: Why the console sent the browser back to sign in (``/login?ended=...``), in the words shown there.
ENDED_MESSAGES = {
    "timeout": "Your session ended. Sign in again to carry on: a note you had not sent is kept.",
}


async def login_form(request: web.Request) -> web.StreamResponse:
    if SESSION_KEY in request:
        raise web.HTTPSeeOther("/console")
    return _login_page(request, message=ENDED_MESSAGES.get(request.query.get("ended", ""), ""))


async def login(request: web.Request) -> web.StreamResponse:
    """Check the name and password (throttled per name and per address) and start a session."""
    form = await request.post()
    name = str(form.get("name", ""))[: MAX_NAME + 1].strip()
    password = str(form.get("password", ""))
    presented = str(form.get("csrf", ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        return _login_page(
            request,
            name=name[:MAX_NAME],
            status=403,
            message="The sign-in form had expired. Please try again.",
        )
    address = client_address(request)
    throttle = request.app[LIMITER]
    pace = await throttle.pace(name, address)
    if pace.retry_after > 0:  # this client's own failures, never a stranger's
        wait = math.ceil(pace.retry_after)
        return _login_page(
            request,
            name=name[:MAX_NAME],
            status=429,
            headers={"Retry-After": str(wait)},
            message=f"Too many failed sign-ins from here. Try again in {wait} seconds.",
        )
    if pace.delay > 0:  # the name is being guessed at: slow every answer, let the right password in
        await asyncio.sleep(pace.delay)
    user = None
    if 0 < len(name) <= MAX_NAME and 0 < len(password) <= MAX_PASSWORD:
        user = await check_login(request.app[STORE], name, password)
    if user is None:
        await throttle.failed(name, address)
        return _login_page(request, name=name[:MAX_NAME], status=401, message="Wrong name or password.")
    await throttle.succeeded(name, address)
    token, _ = await request.app[SESSIONS].create(user, address=address)
    response = web.HTTPSeeOther("/console")
    _set_cookie(
        request, response, SESSION_COOKIE, token, path="/", max_age=int(request.app[SETTINGS].session_ttl_s)
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (the middleware has already checked the CSRF header)."""
    if SESSION_KEY not in request:
        return json_error(401, "unauthorized", "not signed in")
    token = request.cookies.get(SESSION_COOKIE, "")
    await request.app[SESSIONS].end(token)
    response = json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
