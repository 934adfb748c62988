"""The features started with the bridge, in order. Each is ``async def start(bridge, stack) -> None``.

A feature reads its own config section from ``bridge.config``, may add aiohttp routes to ``bridge.app``
(before the server starts), enter context managers on ``stack`` (closed in reverse on shutdown),
register outbox channels with ``bridge.outbox.add_channel`` and store hooks on ``bridge.store``, and
add long-running loops with ``bridge.add_loop(name, coroutine_function)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from bridge import (
    feature_console,
    feature_escalation,
    feature_floods,
    feature_registry,
    feature_serial,
    feature_voice,
)

if TYPE_CHECKING:
    from bridge.service import Bridge

Feature = Callable[["Bridge", AsyncExitStack], Awaitable[None]]

FEATURES: list[Feature] = [
    feature_voice.start,  # POST /alexa, Echo links, check-in schedules (alexa:)
    feature_console.start,  # /login, /console, session cookies + CSRF on the API (console:)
    feature_serial.start,  # serial units and the GSM modem; outbox channels serial, sms (serial:, gsm:)
    feature_registry.start,  # devices, residents, commissioning (registry:, heartbeats:, credentials:)
    feature_escalation.start,  # escalation, /twilio/*, /api/v1/service-levels (escalation:, twilio:)
    feature_floods.start,  # alarm floods grouped into incidents; /api/v1/incidents, /api/v1/queue (floods:)
]
