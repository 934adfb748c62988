"""Telephony wired into the bridge (the feature lives in :mod:`alarm_centre.telephony`).

``start(host, stack)`` turns the ``telephony:`` config (with ``twilio:`` for the account) into settings,
mounts the call API, the ``/twilio/calls/*`` webhooks, the supervisors' pages and the queue's call
script, hands ``Direction=inbound`` calls of ``/twilio/voice`` to the feature, and runs the telephony
loop. The routes are always mounted (they answer 404 while the feature is off), so the API description
is the same on every bridge.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from alarm_centre.escalation.twilio import INBOUND_CALLS
from alarm_centre.telephony.audit import CallAudit
from alarm_centre.telephony.calls import Telephony
from alarm_centre.telephony.dialler import Dialler
from alarm_centre.telephony.metrics import TelephonyMetrics
from alarm_centre.telephony.pages import TelephonyPages
from alarm_centre.telephony.recordings import Recordings
from alarm_centre.telephony.routes import TelephonyRoutes
from alarm_centre.telephony.runner import TELEPHONY_RUNNER, TelephonyRunner
from alarm_centre.telephony.settings import TelephonySettings, operator_lines
from alarm_centre.telephony.tokens import TokenIssuer
from alarm_centre.telephony.webhooks import CallWebhooks

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)


def telephony_settings(config: Config, node: str) -> TelephonySettings:
    cfg = config.telephony
    phones = {name: op.phone for name, op in cfg.operators.items() if op.phone}
    browsers = tuple(name for name, op in cfg.operators.items() if op.browser)
    return TelephonySettings(
        enabled=cfg.enabled and config.twilio.enabled,
        numbers=tuple(cfg.numbers),
        from_number=config.twilio.from_number,
        operators=operator_lines(phones, browsers),
        ring_s=cfg.ring_s,
        overflow_after_s=cfg.overflow_after_s,
        overflow_number=cfg.overflow_number,
        record=cfg.record,
        announcement=cfg.recording_announcement if cfg.record else "",
        retention_days=cfg.retention_days,
        emergency_number=cfg.emergency_number,
        audit_calls_per_handler=cfg.audit_calls_per_handler,
        hold_music_url=cfg.hold_music_url,
        language=config.twilio.language,
        node=node,
    )


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Wire the centre's calls in through ``host`` (see the module docstring)."""
    cfg = host.config.telephony
    tw = host.config.twilio
    tz = ZoneInfo(host.config.escalation.timezone)
    settings = telephony_settings(host.config, host.node)

    def public_url() -> str:
        return tw.public_url or host.config.http.public_url or host.http_url

    telephony = Telephony(host.store, host.intake, settings, clock=host.clock)
    recordings = Recordings(
        host.store, retention_s=settings.retention_s, lease_s=settings.lease_s, clock=host.clock
    )
    audit = CallAudit(host.store, per_handler=settings.audit_calls_per_handler, tz=tz, clock=host.clock)
    metrics = TelephonyMetrics(host.metrics_registry)
    dialler: Dialler | None = None
    if settings.enabled:
        dialler = await stack.enter_async_context(
            Dialler(
                account_sid=tw.account_sid,
                auth_token=tw.auth_token,
                from_number=tw.from_number,
                api_base_url=tw.base_url,
                request_timeout=tw.request_timeout,
                max_attempts=tw.max_attempts,
                language=tw.language,
            )
        )
    sdk = cfg.voice_sdk
    tokens = None
    if sdk.api_key_sid and sdk.api_key_secret.get_secret_value():
        tokens = TokenIssuer(
            tw.account_sid,
            sdk.api_key_sid,
            sdk.api_key_secret.get_secret_value(),
            sdk.twiml_app_sid,
            sdk.token_ttl_s,
        )
    TelephonyRoutes(
        telephony,
        recordings,
        audit,
        metrics,
        enabled=settings.enabled,
        dialler=dialler,
        tokens=tokens,
        sdk_file=sdk.sdk_file,
        tz=tz,
    ).add_routes(host.app)
    webhooks = CallWebhooks(
        telephony,
        recordings,
        metrics,
        public_url,
        enabled=settings.enabled,
        auth_token=tw.auth_token,
        replay_window=tw.replay_window,
    )
    webhooks.add_routes(host.app)
    if host.config.console.enabled:
        TelephonyPages(telephony, audit, tz).add(host.app, calls_on_queue=settings.enabled)
    if not settings.enabled or dialler is None:
        return
    host.app[INBOUND_CALLS] = webhooks.inbound
    runner = await stack.enter_async_context(
        TelephonyRunner(
            telephony, recordings, dialler, metrics, public_url=public_url, tz=tz, poll_s=cfg.poll_s
        )
    )
    host.app[TELEPHONY_RUNNER] = runner
    host.add_loop("telephony", runner.run)
    log.info(
        "telephony: calls to %s, %d operators, overflow %s, recording %s",
        ", ".join(settings.numbers),
        len(settings.operators),
        settings.overflow_number or "none",
        f"kept {settings.retention_days} days" if settings.record else "off",
    )
