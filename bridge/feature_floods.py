"""Alarm floods feature: group many units' technical alarms into incidents (``floods:`` config).

The feature lives in ``alarm_centre/floods/``; this only plugs it into the bridge.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from alarm_centre.floods.grouping import FloodGrouper
from alarm_centre.floods.model import FloodRules
from alarm_centre.floods.routes import add_routes

if TYPE_CHECKING:
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    cfg = host.config.floods
    grouper = FloodGrouper(
        host.store, FloodRules(threshold=cfg.threshold, window_s=cfg.window_s, types=frozenset(cfg.types))
    )
    if cfg.enabled:
        grouper.install()
        log.info(
            "alarm floods: %d or more of one type within %.0f s become an incident (%s)",
            cfg.threshold,
            cfg.window_s,
            ", ".join(sorted(cfg.types)),
        )
    add_routes(host.app, grouper)
