"""Escalation, Twilio and service levels wired into the bridge (the feature lives in
:mod:`alarm_centre.escalation`).

``start(host, stack)`` turns the ``escalation:`` and ``twilio:`` config into settings, mounts the
service-level, policy and Twilio routes, snapshots policies at raise (a store raise hook), and runs the
escalation loop. Metrics go on the bridge's registry.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from alarm_centre.escalation.engine import Escalation, EscalationSettings
from alarm_centre.escalation.metrics import EscalationMetrics
from alarm_centre.escalation.notify import Notifier
from alarm_centre.escalation.runner import ESCALATION_RUNNER, EscalationRunner
from alarm_centre.escalation.service_levels import ServiceLevelRoutes
from alarm_centre.escalation.twilio import TwilioRoutes
from alarm_centre.host import HookOrder

if TYPE_CHECKING:
    from bridge.host import FeatureHost


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Wire escalation, Twilio and service levels in through ``host`` (see the module docstring)."""
    cfg = host.config.escalation
    tw = host.config.twilio
    tz = ZoneInfo(cfg.timezone)

    def public_url() -> str:
        return tw.public_url or host.config.http.public_url or host.http_url

    settings = EscalationSettings(
        supervisor_numbers=tuple(tw.supervisor_numbers),
        twilio_enabled=tw.enabled,
        responder_wait_s=cfg.responder_wait_s,
        retry_s=tuple(cfg.retry_s),
        max_attempts=cfg.max_attempts,
        lease_s=cfg.lease_s,
        node=host.node,
    )
    escalation = Escalation(host.store, settings, clock=host.clock)
    metrics = EscalationMetrics(host.metrics_registry)
    ServiceLevelRoutes(escalation, tz, cfg.policies).add_routes(host.app)
    TwilioRoutes(
        escalation,
        metrics,
        public_url,
        enabled=tw.enabled,
        auth_token=tw.auth_token,
        language=tw.language,
        replay_window=tw.replay_window,
    ).add_routes(host.app)
    if not cfg.enabled:
        return
    await escalation.sync_policies(cfg.policies)
    host.add_raise_hook(escalation.on_raise, HookOrder.ESCALATION, escalation.on_raises)
    host.add_resolve_hook(escalation.on_resolve, HookOrder.ESCALATION)
    notifier: Notifier | None = None
    if tw.enabled:
        notifier = await stack.enter_async_context(
            Notifier(
                account_sid=tw.account_sid,
                auth_token=tw.auth_token,
                from_number=tw.from_number,
                api_base_url=tw.base_url,
                request_timeout=tw.request_timeout,
                max_attempts=tw.max_attempts,
                language=tw.language,
            )
        )
    runner = await stack.enter_async_context(
        EscalationRunner(escalation, notifier, metrics, public_url=public_url, poll_s=cfg.poll_s, tz=tz)
    )
    host.app[ESCALATION_RUNNER] = runner
    host.add_loop("escalation", runner.run)
