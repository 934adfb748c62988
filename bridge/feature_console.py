"""Start the operator console: sign-in, sessions and the live queue, mounted on the bridge's HTTP app."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from alarm_centre.console import ConsoleSettings, setup_console

if TYPE_CHECKING:
    from bridge.host import FeatureHost


def console_settings(host: FeatureHost) -> ConsoleSettings:
    cfg = host.config.console
    secure = cfg.secure_cookies
    if secure is None:
        secure = host.config.http.public_url.startswith("https://")
    return ConsoleSettings(
        session_ttl_s=cfg.session_ttl_s,
        idle_timeout_s=cfg.idle_timeout_s,
        secure_cookies=secure,
        login_max_failures=cfg.login_max_failures,
        login_max_failures_per_address=cfg.login_max_failures_per_address,
        login_window_s=cfg.login_window_s,
        login_max_delay_s=cfg.login_max_delay_s,
        trusted_proxies=tuple(host.config.http.trusted_proxies),
        sound=cfg.sound,
    )


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Mount the console (unless ``console.enabled`` is false)."""
    if not host.config.console.enabled:
        return
    setup_console(host.app, host.store, console_settings(host))
