"""Voice feature: ``POST /alexa``, installers' Echo links and check-in schedules, the missed check-in loop.

The feature lives in ``skills/``; this only plugs it into the bridge. The links and schedule API is
always served (installers may link Echos before the skill goes live); ``/alexa`` and the check-in loop
run only when ``alexa.enabled`` is true.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from skills.endpoint import AlexaEndpoint
from skills.routes import add_installer_routes
from skills.verification import AlexaVerifier
from skills.voice import VoiceService

if TYPE_CHECKING:
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)


def make_verifier(host: FeatureHost) -> AlexaVerifier:
    cfg = host.config.alexa
    return AlexaVerifier(
        cfg.skill_id,
        test_ca=Path(cfg.test_ca) if cfg.test_ca else None,
        test_cert_origin=cfg.test_cert_origin or None,
        fetch_timeout=cfg.fetch_timeout,
        max_body_bytes=cfg.max_body_bytes,
    )


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Wire the voice path into a bridge that is starting (see bridge/features.py)."""
    cfg = host.config.alexa
    # The bridge's clock decides every deadline (tests inject their own): a check-in loop on the real
    # clock would raise a missed check-in the test's time has not reached.
    service = VoiceService(host.store, host.intake, clock=host.clock, metrics_registry=host.metrics_registry)
    add_installer_routes(host.app, service)
    if not cfg.enabled:
        return
    endpoint = AlexaEndpoint(make_verifier(host), service, registry=host.metrics_registry)
    endpoint.add_routes(host.app)
    host.add_loop("voice-check-ins", lambda: service.run_check_in_loop(cfg.check_in_poll_s))
    log.info(
        "Alexa endpoint on /alexa for skill %s%s",
        cfg.skill_id,
        " (TEST MODE: extra CA trusted)" if cfg.test_ca else "",
    )
