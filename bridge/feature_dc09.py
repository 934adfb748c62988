"""SIA DC-09 (``dc09:`` config): receiving from alarm panels and IP units over TCP and UDP, and
forwarding alerts to upstream monitoring centres.

Receiving is off unless ``dc09.listen`` is set. The receiver lives in :mod:`bridge.transports.dc09`; its
bound port is on the app as :data:`bridge.transports.dc09.DC09_RECEIVER` (``listen: "127.0.0.1:0"``
picks one). Forwarding is off unless ``dc09.forward`` lists a path: see :mod:`bridge.dc09_forwarding`.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from alarm_centre.alerts.model import OutboxItem
from bridge import dc09_forwarding
from bridge.transports.dc09 import DC09_RECEIVER, NO_COMMANDS, Dc09Receiver
from bridge.transports.guard import ListenerLimits
from devices.dc09 import TimeWindow

if TYPE_CHECKING:
    from bridge.host import FeatureHost


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Serve DC-09 on ``dc09.listen`` (nothing when it is empty); forward to ``dc09.forward``."""
    cfg = host.config.dc09
    dc09_forwarding.start(host)
    if not cfg.listen:
        return
    address, port = cfg.host_port
    receiver = await stack.enter_async_context(
        Dc09Receiver(
            host=address,
            port=port,
            store=host.store,
            intake=host.intake,
            metrics=host.metrics,
            window=TimeWindow(max_age_s=cfg.old_s, max_ahead_s=cfg.ahead_s),
            limits=ListenerLimits(cfg.max_connections, cfg.idle_s, cfg.max_datagrams),
            clock=host.clock,
        )
    )
    host.app[DC09_RECEIVER] = receiver
    host.add_readiness_check(receiver.readiness)

    async def no_commands(device_id: str, item: OutboxItem) -> None:
        # A DC-09 panel cannot be told to call the centre: close the item (no retries) and let the
        # timeline say why, so the operator calls the resident back.
        await host.store.outbox.finish(item, {"status": "not_supported", "reason": NO_COMMANDS})
        raise ConnectionError(NO_COMMANDS)

    host.add_outbox_channel("dc09", no_commands)
