"""Wiring of DC-09 forwarding (``dc09.forward``): the hooks that queue, the loop that sends, the
readiness check and the metrics. Nothing is registered when no path is configured.

The forwarder is on the app as :data:`DC09_FORWARDER` (tests drive and inspect it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from alarm_centre.forwarding.hooks import ForwardHooks
from alarm_centre.forwarding.queue import ForwardQueue
from alarm_centre.host import HookOrder
from bridge.config import Dc09ForwardPath
from bridge.dc09_forward_metrics import ForwardMetrics
from bridge.dc09_forwarder import Dc09Forwarder, UpstreamPath
from bridge.transports.dc09_upstream import UpstreamLink
from devices.dc09 import parse_key
from devices.dc09_forward import LinkSupervision, PathSettings, Payload, parse_upstream_url

if TYPE_CHECKING:
    from bridge.host import FeatureHost

DC09_FORWARDER: web.AppKey[Dc09Forwarder] = web.AppKey("dc09_forwarder", Dc09Forwarder)


def upstream_path(cfg: Dc09ForwardPath, now: float) -> UpstreamPath:
    """One configured path, ready to send (its key parsed here and kept out of every repr)."""
    key = parse_key(cfg.key.get_secret_value()) if cfg.key is not None else None
    settings = PathSettings(
        account=cfg.account,
        key=key,
        receiver=cfg.receiver or None,
        line=cfg.line,
        payload=Payload(cfg.payload),
    )
    return UpstreamPath(
        name=cfg.name,
        url=cfg.url,
        settings=settings,
        link=UpstreamLink(parse_upstream_url(cfg.url), cfg.ack_timeout_s),
        supervision=LinkSupervision(cfg.link_test_s, now),
        ack_timeout_s=cfg.ack_timeout_s,
    )


def start(host: FeatureHost) -> None:
    """Forward every alert and restore to ``dc09.forward`` (nothing when the list is empty)."""
    cfg = host.config.dc09
    if not cfg.forward:
        return
    hooks = ForwardHooks(host.clock)
    host.add_raise_hook(hooks.on_raise, HookOrder.FORWARDING, hooks.on_raises)
    host.add_resolve_hook(hooks.on_resolve, HookOrder.FORWARDING)
    host.add_event_hook(hooks.on_event, HookOrder.FORWARDING)
    now = host.clock()
    forwarder = Dc09Forwarder(
        paths=[upstream_path(path, now) for path in cfg.forward],
        queue=ForwardQueue(host.store, host.node),
        store=host.store,
        intake=host.intake,
        metrics=ForwardMetrics(host.metrics_registry),
        clock=host.clock,
        poll_s=cfg.forward_poll_s,
    )
    host.store.add_outbox_waker(forwarder.wake)
    host.add_loop("dc09-forwarder", forwarder.run)
    host.add_readiness_check(forwarder.readiness)
    host.app[DC09_FORWARDER] = forwarder
