"""Data protection feature: the audit of reads, subject access and erasure API, and the retention job
(``retention:`` config; docs/data-protection.md).

Need to know and the audit of reads are applied by every route that shows residents' data, whether or
not this feature starts; this adds the privacy API and runs the retention job.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from alarm_centre.http.clients import TRUSTED_PROXIES, trusted_networks
from alarm_centre.privacy.retention import RetentionJob, RetentionPolicy
from alarm_centre.privacy.routes import Privacy, add_privacy_routes
from bridge.retention_kinds import RETENTION_KINDS

if TYPE_CHECKING:
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    cfg = host.config.retention
    # "From where" in the audit of reads believes X-Forwarded-For only from the configured proxies.
    host.app[TRUSTED_PROXIES] = trusted_networks(host.config.http.trusted_proxies)
    policy = RetentionPolicy(days=dict(cfg.days))
    job = None
    if cfg.enabled:
        errors = host.metrics.loop_errors.labels("retention")
        job = RetentionJob(
            host.store,
            RETENTION_KINDS,
            policy,
            every_s=cfg.check_every_s,
            batch=cfg.batch,
            node=host.node,
            clock=host.clock,
            on_failure=errors.inc,
        )
        host.add_loop("retention", job.run)
        log.info(
            "retention: %s",
            ", ".join(
                f"{k['kind']} {'kept' if k['days'] is None else str(k['days']) + ' d'}"
                for k in policy.describe(RETENTION_KINDS)
            ),
        )
    add_privacy_routes(host.app, Privacy(RETENTION_KINDS, policy, job))
