"""The operator console: sign-in, the live alert queue, and pages other features add.

Wire it with :func:`setup_console` (``bridge/feature_console.py`` does). Other features add a page
with :func:`add_console_page` and render it with :func:`page_response`; see ``pages.py``.
"""

from __future__ import annotations

from aiohttp import web

from alarm_centre.console.pages import (
    CONSOLE_PAGES,
    ConsolePage,
    add_console_page,
    page_response,
    require_page,
)
from alarm_centre.console.routes import add_console_routes
from alarm_centre.console.signin import (
    CSRF_HEADER,
    LIMITER,
    SESSION_COOKIE,
    SESSION_KEY,
    SESSIONS,
    SETTINGS,
    TRUSTED_PROXIES,
    ConsoleSettings,
    trusted_networks,
)
from alarm_centre.console.templates import Safe, escape, render
from alarm_centre.sessions import SessionStore, SignInThrottle
from alarm_centre.store.base import AlertStore

__all__ = [
    "CONSOLE_PAGES",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_KEY",
    "ConsolePage",
    "ConsoleSettings",
    "Safe",
    "add_console_page",
    "escape",
    "page_response",
    "render",
    "require_page",
    "setup_console",
]


def setup_console(app: web.Application, store: AlertStore, settings: ConsoleSettings) -> SessionStore:
    """Mount the console and its session middleware on ``app`` (before the server starts)."""
    sessions = SessionStore(store, ttl_s=settings.session_ttl_s, idle_timeout_s=settings.idle_timeout_s)
    app[SETTINGS] = settings
    app[SESSIONS] = sessions
    app[LIMITER] = SignInThrottle(
        store,
        per_name=settings.login_max_failures,
        per_address=settings.login_max_failures_per_address,
        window_s=settings.login_window_s,
        max_delay_s=settings.login_max_delay_s,
    )
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)
    add_console_routes(app)
    return sessions
