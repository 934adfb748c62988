"""``telecare-bridge demo --with-scaip``: two simulated SCAIP social alarms beside the fleet.

The bridge listens for SCAIP over SIP (``127.0.0.1:15060``, UDP and TCP, unless ``--scaip-listen`` says
otherwise). Two units are registered with residents, one sending over UDP, the other over TCP. Each
polls (``mty`` PI, a heartbeat) now and then and, less often, raises an alarm instead (a pendant press,
a fall, smoke, a low battery); every MESSAGE is answered once stored, and the alarms show on the
console's queue like any unit's. The simulated units are :mod:`simulators.scaip_unit`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Literal

from alarm_centre.registry.service import Registry
from bridge.cli.demo_listen import register_unit
from bridge.config import Config
from devices.registry import Resident
from devices.scaip import MessageResponse, MessageType, build_mrq
from simulators.scaip_unit import ScaipUnit

log = logging.getLogger("telecare.demo.scaip")

#: Where the demo listens unless told otherwise (``--scaip-listen``); not 5060, which a SIP phone or
#: server on the same machine may hold.
DEFAULT_LISTEN = "127.0.0.1:15060"


@dataclass(frozen=True)
class DemoScaipUnit:
    resident_id: str
    name: str
    device_id: str
    cid: str
    transport: Literal["udp", "tcp"]

    def describe(self) -> str:
        return f"{self.device_id} (cid {self.cid}, {self.transport.upper()})"


UNITS = [
    # Residents of their own: on a fleet resident's record (res-ada, res-grace, ...) the unit's calls for
    # help would join that resident's open help alert instead of showing as this unit's.
    DemoScaipUnit("res-alan", "Alan Turing", "scaip-unit-alan", "4670101", "udp"),
    DemoScaipUnit("res-joan", "Joan Clarke", "scaip-unit-joan", "4670102", "tcp"),
]
#: Alarms the units raise (dty, stc), with weights (mostly pendant presses), and what they are.
ALARMS = [(("0003", "0010"), 4), (("0005", "0009"), 2), (("0023", "0009"), 1), (("0003", "0014"), 1)]
ALARM_NAMES = {
    ("0003", "0010"): "pendant",
    ("0005", "0009"): "fall",
    ("0023", "0009"): "smoke",
    ("0003", "0014"): "low battery",
}
#: The chance that a unit's next message is an alarm rather than a heartbeat.
ALARM_CHANCE = 0.3


def listening(config: Config, listen: str) -> Config:
    """``config`` with the SCAIP receiver on ``listen``."""
    return config.model_copy(update={"scaip": config.scaip.model_copy(update={"listen": listen})})


async def register(registry: Registry) -> None:
    """Register the demo residents and their units (again on every start: the same records)."""
    for spec in UNITS:
        fields = {
            "id": spec.device_id,
            "kind": "ip_unit",
            "channel": "scaip",
            "resident_id": spec.resident_id,
            "scaip_cid": spec.cid,
            "heartbeat_interval_s": 300,
        }
        await register_unit(registry, Resident(id=spec.resident_id, name=spec.name), fields)


def describe(listen: str) -> str:
    return f"  SCAIP       {listen} (SIP over UDP and TCP): units " + ", ".join(u.describe() for u in UNITS)


async def run_units(host: str, port: int, every_s: float) -> None:
    """Until cancelled: each unit polls every ~``every_s`` seconds, now and then raising an alarm
    instead; a message still unanswered after the unit's resends is logged and the unit goes on."""
    async with AsyncExitStack() as stack:
        units = [
            (
                spec,
                await stack.enter_async_context(
                    ScaipUnit(host, port, cid=spec.cid, transport=spec.transport, timer_f_s=8.0)
                ),
            )
            for spec in UNITS
        ]
        async with asyncio.TaskGroup() as tg:
            for spec, unit in units:
                tg.create_task(_unit_life(spec, unit, every_s), name=f"demo-{spec.device_id}")


async def _unit_life(spec: DemoScaipUnit, unit: ScaipUnit, every_s: float) -> None:
    codes, weights = zip(*ALARMS, strict=True)
    while True:
        await asyncio.sleep(random.expovariate(1 / every_s) + 1)
        if random.random() < ALARM_CHANCE:
            dty, stc = random.choices(codes, weights)[0]
            what = f"an alarm ({ALARM_NAMES[dty, stc]})"
            body = build_mrq(ref=unit.next_ref(), cid=spec.cid, dty=dty, stc=stc)
        else:
            what = "a heartbeat"
            body = build_mrq(ref=unit.next_ref(), cid=spec.cid, mty=MessageType.HEARTBEAT, dty="0002")
        try:
            answer = await unit.deliver(body, attempts=3, pause_s=2.0)
        except TimeoutError as exc:
            log.warning("SCAIP unit %s: %s went unanswered: %s", spec.cid, what, exc)
            continue
        snu = answer.mrs.snu.name if isinstance(answer.mrs, MessageResponse) else f"SIP {answer.status}"
        log.info("SCAIP unit %s (%s) sent %s -> %s", spec.cid, spec.device_id, what, snu)
