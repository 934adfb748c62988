"""Performs outbox items after their transaction committed: commands to units, by channel.

Woken right after a commit that added work, and on a slow poll for retries. Claiming pushes an item's
next attempt out, so a crash between claim and send means a later retry, never a lost command; the
unit's ``cmd_result`` (matched by ``cmd_id``) is what finally closes an item. Resolving an alert closes
its pending commands, and each item is checked again just before it is sent, so a unit is never told
to call the centre about an alert that is already closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from alarm_centre.alerts.model import OutboxItem
from alarm_centre.faults import ECHO_SUMMARY_EVERY_S, FaultLog, Retry
from alarm_centre.store.base import AlertStore
from bridge.metrics import BridgeMetrics
from devices.mqtt_codec import encode_command

log = logging.getLogger(__name__)

#: Sends one command payload to a device on one channel; raises ConnectionError when it cannot now.
CommandSender = Callable[[str, OutboxItem], Awaitable[None]]


class OutboxDispatcher:
    def __init__(
        self,
        store: AlertStore,
        metrics: BridgeMetrics,
        *,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._poll_s = poll_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._senders: dict[str, CommandSender] = {}
        store.add_outbox_waker(self._wake.set)
        #: The store failing under the outbox (claims, checks, records): one fault, backing off.
        self._retry = Retry(log, "outbox cannot read or record commands")
        #: Commands the transports could not send now (a broker down): one fault, not a line each.
        self.unsent = FaultLog(
            log,
            "commands not sent",
            noun="commands (retried later)",
            level=logging.WARNING,
            every_s=ECHO_SUMMARY_EVERY_S,
        )

    def add_channel(self, channel: str, sender: CommandSender) -> None:
        """Register how to reach devices on a channel (``mqtt``, ``serial``, ``sms``...)."""
        self._senders[channel] = sender

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        wait = self._poll_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                items = await self._store.outbox.claim(now=self._clock())
            except Exception as exc:
                wait = max(self._poll_s, self._retry.failed(exc))
                continue
            self._retry.succeeded()
            wait = self._poll_s
            if items:
                await asyncio.gather(*(self._perform(item) for item in items))
                if len(items) >= 100:
                    self._wake.set()

    async def _perform(self, item: OutboxItem) -> None:
        cmd = str(item.payload.get("cmd"))
        try:
            void = await self._store.outbox.void_reason(item)
        except Exception as exc:  # cannot check now: the lease brings the item back for a later try
            self._retry.fault.failed(f"command {cmd} to {item.target} not checked, so not sent now: {exc}")
            return
        if void is not None:
            self._metrics.commands.labels(cmd, "cancelled").inc()
            log.info("command %s to %s not sent: %s", cmd, item.target, void)
            return
        sender = self._senders.get(item.channel)
        error: str | None = None
        if sender is None:
            error = f"no transport for channel {item.channel!r} on this node"
        else:
            try:
                await sender(item.target, item)
            except (ConnectionError, TimeoutError, OSError) as exc:
                error = str(exc) or type(exc).__name__
        self._metrics.commands.labels(cmd, "failed" if error else "sent").inc()
        if error:
            self.unsent.failed(f"{cmd} to {item.target} (attempt {item.attempts}): {error}")
        elif sender is not None:
            self.unsent.recovered()
        try:
            await self._store.outbox.sent(item, error=error)
        except Exception as exc:
            self._retry.fault.failed(f"could not record command attempt {item.cmd_id}: {exc}")


def mqtt_payload(item: OutboxItem) -> bytes:
    """The wire form of an outbox command on MQTT."""
    args = item.payload.get("args")
    return encode_command(
        item.cmd_id or str(item.id), str(item.payload["cmd"]), args if isinstance(args, dict) else None
    )
