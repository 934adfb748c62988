"""Serial feature: directly attached units (``serial:``) and a GSM modem (``gsm:``) wired into the bridge.

- One :class:`~bridge.transports.serial.SerialTransport` per ``serial.units`` entry and one
  :class:`~bridge.transports.gsm.GsmModem` when ``gsm.port`` is set, all feeding ``host.intake``.
- Outbox channel ``serial``: a command goes to the line that has heard from the device (with a single
  configured line, to that line). Channel ``sms``: the command is texted to the device's ``phone`` in the
  format of :func:`devices.sms_alarm.sms_command_text`; the item counts as done once the network
  accepted the SMS (units do not confirm commands by SMS).
- SMS senders are matched to ``devices.phone`` (E.164) after :func:`devices.sms_alarm.number_candidates`
  normalisation.
- ``/metrics``: link, modem and outcome gauges and counters; ``/healthz``: a configured serial port that is
  down, or a configured modem that is not ready or not registered, makes the bridge not ready (503).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from alarm_centre.alerts.model import OutboxItem
from alarm_centre.store.base import AlertStore
from bridge.metrics import BridgeMetrics
from bridge.transports.gsm import AtCommandError, GsmModem
from bridge.transports.serial import SerialTransport
from devices.sms_alarm import number_candidates, sms_command_text

if TYPE_CHECKING:
    from bridge.host import FeatureHost

log = logging.getLogger(__name__)

# --- phone numbers ----------------------------------------------------------------------------------


async def device_for_number(store: AlertStore, sender: str, country_code: str = "44") -> str | None:
    """The id of the device whose ``phone`` is ``sender`` (normalised), or None. Raises when the store
    cannot answer, so the modem keeps the SMS on the SIM and tries again."""
    candidates = number_candidates(sender, country_code)
    if not candidates:
        return None
    marks = ", ".join("?" for _ in candidates)
    async with store.read() as tx:
        rows = await tx.fetchall(f"SELECT id, phone FROM devices WHERE phone IN ({marks})", *candidates)
    by_phone = {row["phone"]: str(row["id"]) for row in rows}
    for candidate in candidates:  # E.164 first
        if candidate in by_phone:
            return by_phone[candidate]
    return None


async def phone_of(store: AlertStore, device_id: str) -> str | None:
    async with store.read() as tx:
        row = await tx.fetchone("SELECT phone FROM devices WHERE id = ?", device_id)
    return None if row is None or not row["phone"] else str(row["phone"])


# --- the feature -------------------------------------------------------------------------------------


@dataclass
class SerialFeature:
    """The running serial lines and modem of one bridge (``host.app[SERIAL]``)."""

    store: AlertStore
    metrics: BridgeMetrics
    country_code: str = "44"
    transports: list[SerialTransport] = field(default_factory=list)
    modem: GsmModem | None = None

    # outbox channel "serial"
    async def send_serial(self, device_id: str, item: OutboxItem) -> None:
        transport = self._line_for(device_id)
        cmd = str(item.payload.get("cmd"))
        args = item.payload.get("args")
        try:
            await transport.send_command(
                device_id, item.cmd_id or str(item.id), cmd, args if isinstance(args, dict) else None
            )
        except ValueError as exc:  # cannot be framed (bad id or args): retrying will not help
            raise ConnectionError(f"command cannot be framed for the serial line: {exc}") from exc

    def _line_for(self, device_id: str) -> SerialTransport:
        serving = [t for t in self.transports if t.serves(device_id)]
        if not serving and len(self.transports) == 1:
            serving = self.transports  # one line: every serial unit is on it
        if not serving:
            raise ConnectionError(
                f"no serial line has heard from {device_id} since the bridge started; "
                "retrying when the unit next sends"
            )
        return next((t for t in serving if t.connected), serving[0])

    # outbox channel "sms"
    async def send_sms(self, device_id: str, item: OutboxItem) -> None:
        modem = self.modem
        if modem is None:
            raise ConnectionError("no GSM modem configured (gsm.port)")
        try:
            number = await phone_of(self.store, device_id)
        except Exception as exc:  # the outbox retries ConnectionError; anything else would stop it
            raise ConnectionError(f"cannot read {device_id}'s phone number: {exc}") from exc
        if number is None:
            raise ConnectionError(f"device {device_id} has no phone number to text")
        args = item.payload.get("args")
        try:
            text = sms_command_text(
                item.cmd_id or str(item.id),
                str(item.payload.get("cmd")),
                args if isinstance(args, dict) else None,
            )
        except ValueError as exc:
            await self._finish(item, {"error": str(exc)})
            self.metrics.sms_sent.labels("too_long").inc()
            raise ConnectionError(str(exc)) from exc
        try:
            reference = await modem.send_sms(number, text)
        except AtCommandError as exc:
            self.metrics.sms_sent.labels("failed").inc()
            raise ConnectionError(f"modem refused the SMS: {exc}") from exc
        except (ConnectionError, TimeoutError):
            self.metrics.sms_sent.labels("failed").inc()
            raise
        self.metrics.sms_sent.labels("sent").inc()
        # Units do not confirm commands by SMS: accepted by the network is as far as we can follow it.
        await self._finish(item, {"result": "sms_submitted", "number": number, "reference": reference})

    async def _finish(self, item: OutboxItem, result: dict[str, Any]) -> None:
        """Close the outbox item; if the store cannot record it now, the command is sent again later
        (same ``cmd_id``), which units treat as one command."""
        try:
            await self.store.outbox.finish(item, result)
        except Exception as exc:
            log.warning(
                "SMS command %s sent but not recorded as done (%s); it will be sent again", item.cmd_id, exc
            )

    async def resolve_sender(self, sender: str) -> str | None:
        return await device_for_number(self.store, sender, self.country_code)

    # /healthz and /metrics
    async def readiness(self) -> list[str]:
        self.refresh_gauges()
        problems = []
        for t in self.transports:
            if not t.connected:
                why = f" ({t.last_error})" if t.last_error else ""
                problems.append(f"serial port {t.port} is down{why}")
        modem = self.modem
        if modem is not None:
            if not modem.ready:
                why = f" ({modem.last_error})" if modem.last_error else ""
                problems.append(f"GSM modem on {modem.port} is not ready{why}")
            elif modem.registration is None:
                problems.append(f"GSM modem on {modem.port}: network registration not read yet")
            elif not modem.registration.registered:
                problems.append(
                    f"GSM modem on {modem.port} is not registered on a network "
                    f"({modem.registration.description})"
                )
        return problems

    def refresh_gauges(self) -> None:
        m = self.metrics
        for t in self.transports:
            m.serial_link_up.labels(t.port).set(1 if t.connected else 0)
        modem = self.modem
        if modem is not None:
            m.modem_ready.labels(modem.port).set(1 if modem.ready else 0)
            dbm = modem.signal.dbm if modem.signal is not None else None
            m.modem_signal_dbm.labels(modem.port).set(math.nan if dbm is None else dbm)
            registered = modem.registration is not None and modem.registration.registered
            m.modem_registered.labels(modem.port).set(1 if registered and modem.ready else 0)

    async def gauge_loop(self) -> None:
        """Refresh the line and modem gauges every 2 s; a failure is logged, counted and survived."""
        while True:
            with self.metrics.loop_round("serial-gauges"):
                self.refresh_gauges()
            await asyncio.sleep(2)


SERIAL: web.AppKey[SerialFeature] = web.AppKey("serial", SerialFeature)


def _frame_counter(metrics: BridgeMetrics, port: str) -> Callable[[str], None]:
    def count(outcome: str) -> None:
        metrics.serial_frames.labels(port, outcome).inc()

    return count


def _link_gauge(metrics: BridgeMetrics, port: str) -> Callable[[bool], None]:
    def link(up: bool) -> None:
        metrics.serial_link_up.labels(port).set(1 if up else 0)

    return link


async def start(host: FeatureHost, stack: AsyncExitStack) -> None:
    """Open the configured serial lines and modem; register the ``serial`` and ``sms`` channels."""
    serial_cfg, gsm_cfg = host.config.serial, host.config.gsm
    ports = [u.port for u in serial_cfg.units]
    if gsm_cfg.port and gsm_cfg.port in ports:
        raise RuntimeError(
            f"gsm.port {gsm_cfg.port} is also listed in serial.units; a port serves one of them"
        )
    metrics = host.metrics
    feature = SerialFeature(host.store, metrics, country_code=gsm_cfg.country_code)
    host.app[SERIAL] = feature
    for unit in serial_cfg.units:
        port = unit.port
        transport = SerialTransport(
            port,
            intake=host.intake,
            baudrate=unit.baudrate,
            rtscts=unit.rtscts,
            xonxoff=unit.xonxoff,
            on_outcome=_frame_counter(metrics, port),
            on_link=_link_gauge(metrics, port),
            on_ack_latency=metrics.ack_latency.labels("serial").observe,
        )
        metrics.serial_link_up.labels(port).set(0)
        feature.transports.append(await stack.enter_async_context(transport))
    if gsm_cfg.port:
        feature.modem = await stack.enter_async_context(
            GsmModem(
                gsm_cfg.port,
                intake=host.intake,
                resolve_sender=feature.resolve_sender,
                baudrate=gsm_cfg.baudrate,
                rtscts=gsm_cfg.rtscts,
                xonxoff=gsm_cfg.xonxoff,
                command_timeout=gsm_cfg.command_timeout_s,
                poll_interval=gsm_cfg.poll_interval_s,
                on_outcome=lambda outcome: metrics.sms_messages.labels(outcome).inc(),
                on_status=lambda _modem: feature.refresh_gauges(),
            )
        )
    if feature.transports:
        host.add_outbox_channel("serial", feature.send_serial)
    if feature.modem is not None:
        host.add_outbox_channel("sms", feature.send_sms)
    if feature.transports or feature.modem is not None:
        feature.refresh_gauges()
        host.add_readiness_check(feature.readiness)
        host.add_loop("serial-gauges", feature.gauge_loop)
