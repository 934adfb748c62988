"""The features started with the bridge, in order. Each is ``async def start(host, stack) -> None``.

A feature reads its own config section from ``host.config``, may add aiohttp routes and app keys to
``host.app`` (before the server starts), enter context managers on ``stack`` (closed in reverse on
shutdown), and register outbox channels, ordered store hooks, readiness checks and long-running loops
through the host (:class:`bridge.host.FeatureHost`). The order of this list decides only the order of
start-up; the order store hooks run in is their :class:`alarm_centre.host.HookOrder`.
"""

from __future__ import annotations

from bridge import (
    feature_console,
    feature_dc09,
    feature_escalation,
    feature_floods,
    feature_privacy,
    feature_registry,
    feature_scaip,
    feature_serial,
    feature_telephony,
    feature_voice,
)
from bridge.host import Feature

FEATURES: list[Feature] = [
    feature_voice.start,  # POST /alexa, Echo links, check-in schedules (alexa:)
    feature_console.start,  # /login, /console, session cookies + CSRF on the API (console:)
    feature_serial.start,  # serial units and the GSM modem; outbox channels serial, sms (serial:, gsm:)
    feature_registry.start,  # devices, residents, commissioning (registry:, heartbeats:, credentials:)
    feature_escalation.start,  # escalation, /twilio/*, /api/v1/service-levels (escalation:, twilio:)
    feature_telephony.start,  # calls in and out, recordings, call audit; /api/v1/calls (telephony:)
    feature_floods.start,  # alarm floods grouped into incidents; /api/v1/incidents, /api/v1/queue (floods:)
    feature_dc09.start,  # SIA DC-09 receiver, TCP and UDP (dc09:)
    feature_scaip.start,  # SCAIP over SIP: UDP, TCP and TLS (scaip:)
    feature_privacy.start,  # audit of reads, subject access, erasure, the retention job (retention:)
]
