"""Installers' feature: registry API routes, the store hook, heartbeat supervision and broker credentials.

The feature lives in ``alarm_centre/registry/``; this only plugs it into the bridge (and builds the
registry and the credential manager the CLI uses too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from alarm_centre.registry.service import Registry
from alarm_centre.store.base import AlertStore
from bridge.credentials import CredentialManager

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.host import FeatureHost


def make_registry(config: Config, store: AlertStore, *, clock: Callable[[], float] = time.time) -> Registry:
    """The registry with the configured heartbeat defaults (the CLI uses the same); a running bridge
    passes its clock, which decides heartbeat and commissioning deadlines."""
    hb = config.heartbeats
    return Registry(
        store, default_interval_s=hb.default_interval_s, default_grace_s=hb.default_grace_s, clock=clock
    )


def make_credentials(config: Config, registry: Registry) -> CredentialManager | None:
    """The credential manager, or None when ``credentials.enabled`` is false."""
    if not config.credentials.enabled:
        return None
    password = config.credentials.bridge_password
    if not password and config.mqtt.url:
        password = urlsplit(config.mqtt.url).password or ""
    return CredentialManager(
        registry,
        config.credentials,
        topic_root=config.topic_root,
        bridge_password=password,
        embedded=not config.mqtt.url,
    )


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    from alarm_centre.registry.pages import add_installer_pages
    from alarm_centre.registry.routes import RegistryOptions, add_registry_routes  # aiohttp: not for the CLI
    from alarm_centre.registry.supervision import CommissioningTimeouts, HeartbeatSupervisor, SweepFailures

    config = host.config
    registry = make_registry(config, host.store, clock=host.clock)
    registry.install()
    credentials = make_credentials(config, registry)
    if credentials is not None:
        await credentials.sync()
    host.provide_credentials(credentials)
    add_registry_routes(
        host.app,
        registry,
        RegistryOptions(
            commissioning_minutes=config.registry.commissioning_minutes,
            max_commissioning_minutes=config.registry.max_commissioning_minutes,
            credentials=credentials,
            topic_root=config.topic_root,
        ),
    )
    add_installer_pages(host.app)  # console pages; shown once the console feature is on
    hb = config.heartbeats
    failures = SweepFailures(host.metrics_registry)
    if hb.enabled:
        supervisor = HeartbeatSupervisor(
            registry,
            host.intake,
            check_every_s=hb.check_every_s,
            batch=hb.batch,
            failures=failures,
            clock=host.clock,  # the clock the transports time events by (tests inject their own)
        )
        host.add_loop("heartbeat-supervision", supervisor.run)
    else:
        timeouts = CommissioningTimeouts(registry, check_every_s=5.0, failures=failures)
        host.add_loop("commissioning-timeouts", timeouts.run)
