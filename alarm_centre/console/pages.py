"""Console pages and the navigation bar: how features add their own page (service levels, registry, ...).

A feature calls :func:`add_console_page` while the bridge starts (before the server runs); the page
appears in the navigation of every user who holds its ``right``. Its handler renders inside the
shared layout with :func:`page_response`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from alarm_centre.alerts.model import User
from alarm_centre.console.templates import Safe, escape, render
from alarm_centre.http.api import USER_KEY, require

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Security headers on every console HTML page. No inline script or style: escaping mistakes stay inert.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class ConsolePage:
    """One entry in the console's navigation bar."""

    path: str  # e.g. "/console/service-levels"
    title: str  # e.g. "Service levels"
    right: str = "alerts:read"  # users without this right do not see the link
    order: int = 50  # position in the bar; the queue is 0


CONSOLE_PAGES: web.AppKey[list[ConsolePage]] = web.AppKey("console_pages", list)
#: Scripts other features add to the queue page (same origin; telephony's incoming-call banner).
QUEUE_SCRIPTS: web.AppKey[tuple[str, ...]] = web.AppKey("queue_scripts", tuple)
QUEUE_PAGE = ConsolePage("/console", "Queue", "alerts:read", 0)


def add_console_page(app: web.Application, page: ConsolePage, handler: Handler | None = None) -> None:
    """Add ``page`` to the navigation and, when given, route ``GET page.path`` to ``handler``.

    Works whether or not the console feature has started yet. The handler must check rights itself
    (``alarm_centre.http.api.require(request, page.right)``); the session middleware has already set the user.
    """
    if CONSOLE_PAGES not in app:
        app[CONSOLE_PAGES] = []
    app[CONSOLE_PAGES].append(page)
    if handler is not None:
        app.router.add_get(page.path, handler)


def require_page(request: web.Request, right: str) -> User:
    """For console page handlers: the signed-in user holding ``right``; not signed in goes to /login."""
    if USER_KEY not in request:
        raise web.HTTPSeeOther("/login")
    return require(request, right)


def nav_for(request: web.Request, user: User) -> list[ConsolePage]:
    pages = [QUEUE_PAGE, *request.app.get(CONSOLE_PAGES, [])]
    return sorted((p for p in pages if user.can(p.right)), key=lambda p: (p.order, p.title))


def _nav_html(request: web.Request, user: User) -> Safe:
    items = []
    for page in nav_for(request, user):
        current = ' aria-current="page"' if page.path == request.path else ""
        items.append(f'<li><a href="{escape(page.path)}"{current}>{escape(page.title)}</a></li>')
    return Safe("".join(items))


def page_response(
    request: web.Request, *, title: str, body: Safe, scripts: tuple[str, ...] = (), status: int = 200
) -> web.Response:
    """A full console page: header with navigation, user and sign-out, then ``body`` (already escaped).

    ``scripts`` are paths of same-origin JavaScript files (inline script is blocked by the CSP).
    Build ``body`` with ``render("your.html", ...)`` or from ``escape(...)`` pieces.
    """
    user = request[USER_KEY]
    script_tags = Safe("".join(f'<script src="{escape(s)}" defer></script>' for s in scripts))
    text = render(
        "layout.html",
        title=title,
        nav=_nav_html(request, user),
        user=user.name,
        role=user.role.value,
        body=body,
        scripts=script_tags,
    )
    return web.Response(
        text=text, content_type="text/html", charset="utf-8", status=status, headers=PAGE_HEADERS
    )
