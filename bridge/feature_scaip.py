"""SCAIP receiving (``scaip:`` config): digital social alarms sending SIP MESSAGEs over UDP, TCP and TLS.

Off unless ``scaip.listen`` is set. The receiver lives in :mod:`bridge.transports.scaip`; its bound ports
are on the app as :data:`bridge.transports.scaip.SCAIP_RECEIVER` (``listen: "127.0.0.1:0"`` picks one).
"""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from alarm_centre.alerts.model import OutboxItem
from bridge.transports.guard import ListenerLimits
from bridge.transports.scaip import NO_COMMANDS, SCAIP_RECEIVER, TRANSPORT, ScaipReceiver

if TYPE_CHECKING:
    from bridge.host import FeatureHost

#: What the timeline says of a ``call_centre`` to a SCAIP unit: the answer already asked for the call.
TOLD_IN_ANSWER = "told in the SCAIP answer (mrs) to open its speech call to the centre"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server context for SIPS: TLS 1.2 or later, the configured certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Serve SCAIP on ``scaip.listen`` (nothing when it is empty)."""
    cfg = host.config.scaip
    if not cfg.listen:
        return
    address, port = cfg.host_port
    tls_host, tls_port = cfg.tls_host_port if cfg.tls_listen else ("", 0)
    receiver = await stack.enter_async_context(
        ScaipReceiver(
            host=address,
            port=port,
            store=host.store,
            intake=host.intake,
            metrics=host.metrics,
            call_receiver=cfg.call_receiver,
            answer=cfg.answer,
            realm=cfg.realm,
            limits=ListenerLimits(cfg.max_connections, cfg.idle_s, cfg.max_datagrams),
            tls=tls_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_listen else None,
            tls_host=tls_host,
            tls_port=tls_port,
            clock=host.clock,
        )
    )
    host.app[SCAIP_RECEIVER] = receiver
    host.add_readiness_check(receiver.readiness)
    told = {"how": "scaip mrs", "mre": "duplex", "cre": cfg.call_receiver or "the unit's own receiver"}
    # The call_centre a unit's own help alarm decides is closed in the alarm's transaction: the answer
    # (sent once that commits) carries it, so the outbox has nothing to send.
    host.store.outbox.in_band["scaip", "call_centre"] = {"status": "sent", "detail": TOLD_IN_ANSWER, **told}

    async def commands(device_id: str, item: OutboxItem) -> None:
        if item.payload.get("cmd") == "call_centre" and await _raised_over_scaip(host, item, device_id):
            # The unit was told to call in the answer to its alarm (an item queued before the in-band
            # close above, e.g. by an older version): the command is done; close it, and the timeline
            # records it as sent.
            await host.store.outbox.finish(item, {"status": "sent", "detail": TOLD_IN_ANSWER, **told})
            return
        # Anything else (settings, a call for an alert raised by another path): a SCAIP unit takes no
        # commands outside its answers. Close the item (no retries); the timeline says why.
        await host.store.outbox.finish(item, {"status": "not_supported", "reason": NO_COMMANDS})
        raise ConnectionError(NO_COMMANDS)

    host.add_outbox_channel("scaip", commands)


async def _raised_over_scaip(host: FeatureHost, item: OutboxItem, device_id: str) -> bool:
    """Whether the item's alert was raised by this unit's own SCAIP alarm (so its answer told it to call)."""
    if item.alert_id is None:
        return False
    alert, _ = await host.store.get_alert(str(item.alert_id))
    return alert.device_id == device_id and alert.data.get("source") == TRANSPORT
