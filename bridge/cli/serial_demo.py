"""``telecare-bridge demo --with-serial``: a serial unit and a GSM modem, simulated on ptys, beside the fleet.

The unit (``serial-unit-alan``, on a serial line) and the GSM social alarm (``gsm-unit-joan``, texting the
modem from +447700900555) are registered with residents; now and then the unit raises an event, the GSM
unit texts an alarm, and a stranger texts for help (an ``unregistered`` alert). Their ptys live in a
temporary directory for the demo's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from alarm_centre.store.base import AlertStore
from bridge.config import Config, SerialConfig, SerialUnitConfig
from simulators.gsm_modem import SimulatedModem
from simulators.serial_unit import SimulatedSerialUnit

SERIAL_RESIDENT = ("res-alan", "Alan Turing", "serial-unit-alan")
GSM_RESIDENT = ("res-joan", "Joan Clarke", "gsm-unit-joan")
GSM_NUMBER = "+447700900555"
STRANGER = "+447700900999"
UNIT_EVENTS = [("pendant", 3), ("fall", 1), ("low_battery", 1), ("heartbeat", 2)]
GSM_TEXTS = [("ALARM PENDANT", 3), ("ALARM FALL", 1), ("LOW BATTERY", 1), ("CID 1101 01 001", 1)]


@dataclass
class SerialDemo:
    unit: SimulatedSerialUnit
    modem: SimulatedModem
    config: Config

    async def register(self, store: AlertStore) -> None:
        resident, name, unit_id = SERIAL_RESIDENT
        await store.devices.upsert_resident(resident, name)
        await store.devices.upsert_device(unit_id, "serial_unit", resident_id=resident, channel="serial")
        resident, name, unit_id = GSM_RESIDENT
        await store.devices.upsert_resident(resident, name)
        await store.devices.upsert_device(
            unit_id, "gsm_unit", resident_id=resident, channel="sms", phone=GSM_NUMBER
        )

    def describe(self) -> str:
        return (
            f"  serial      unit {SERIAL_RESIDENT[2]} on {self.unit.path}; "
            f"GSM modem on {self.modem.path} (SMS alarms from {GSM_NUMBER})"
        )

    async def run(self, every_s: float) -> None:
        """Until cancelled: a serial event, an SMS alarm, and now and then a stranger's call for help."""
        await asyncio.sleep(2.0)  # let the bridge open the ports
        while True:
            await asyncio.sleep(random.expovariate(1 / every_s))
            kinds, weights = zip(*UNIT_EVENTS, strict=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self.unit.raise_event(random.choices(kinds, weights)[0])
            await asyncio.sleep(random.expovariate(1 / every_s))
            if random.random() < 0.2:
                await self.modem.deliver(STRANGER, "Help, I have fallen and can't get up")
            else:
                texts, weights = zip(*GSM_TEXTS, strict=True)
                await self.modem.deliver(GSM_NUMBER, random.choices(texts, weights)[0])


@contextlib.asynccontextmanager
async def serial_demo(config: Config) -> AsyncIterator[SerialDemo]:
    """Start the simulated unit and modem; yields them with ``config`` pointed at their ptys."""
    with tempfile.TemporaryDirectory(prefix="telecare-demo-") as tmp:
        unit_link, modem_link = str(Path(tmp) / "unit"), str(Path(tmp) / "modem")
        async with (
            SimulatedSerialUnit(SERIAL_RESIDENT[2], link=unit_link, retry_interval=2.0) as unit,
            SimulatedModem(link=modem_link) as modem,
        ):
            demo_config = config.model_copy(
                update={
                    "serial": SerialConfig(units=[*config.serial.units, SerialUnitConfig(port=unit_link)]),
                    "gsm": config.gsm.model_copy(update={"port": modem_link, "poll_interval_s": 10.0}),
                }
            )
            yield SerialDemo(unit, modem, demo_config)
