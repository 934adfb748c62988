"""``telecare-bridge demo --with-dc09``: two simulated SIA DC-09 panels beside the fleet.

The bridge listens for DC-09 (``127.0.0.1:10009`` unless ``--dc09-listen`` says otherwise). Two panels
are registered with residents: one reports over UDP in clear, the other over TCP encrypted with an
AES-128 key registered on its unit. Each sends a link test now and then and, less often, an alarm (a
pendant, smoke, a panic, a flood, a low battery); every frame is ACKed once stored, and the alarms show
on the console's queue like any unit's.
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
from devices.dc09 import parse_key
from devices.registry import Resident
from simulators.dc09_panel import Dc09Panel

log = logging.getLogger("telecare.demo.dc09")

#: Where the demo listens unless told otherwise (``--dc09-listen``).
DEFAULT_LISTEN = "127.0.0.1:10009"


@dataclass(frozen=True)
class DemoPanel:
    resident_id: str
    name: str
    device_id: str
    account: str
    key: str | None
    transport: Literal["tcp", "udp"]

    def describe(self) -> str:
        security = "AES-128" if self.key else "clear"
        return f"{self.device_id} (account {self.account}, {self.transport.upper()}, {security})"


#: The demo key is no secret: it is in this file. A real unit's key is write-only and never printed.
PANELS = [
    DemoPanel("res-hedy", "Hedy Lamarr", "dc09-panel-hedy", "1001", None, "udp"),
    DemoPanel(
        "res-katherine", "Katherine Johnson", "dc09-panel-katherine", "2002", "demo-dc09-key-16", "tcp"
    ),
]
#: Contact ID codes the panels raise, with weights (mostly pendants) and what they are, for the log.
ALARMS = [(101, 4), (111, 1), (120, 1), (154, 1), (302, 1)]
ALARM_NAMES = {101: "pendant", 111: "smoke", 120: "panic", 154: "flood", 302: "low battery"}
#: The chance that a panel's next frame is an alarm rather than a link test.
ALARM_CHANCE = 0.3


def listening(config: Config, listen: str) -> Config:
    """``config`` with the DC-09 receiver on ``listen``."""
    return config.model_copy(update={"dc09": config.dc09.model_copy(update={"listen": listen})})


async def register(registry: Registry) -> None:
    """Register the demo residents and their panels (again on every start: the same records)."""
    for panel in PANELS:
        fields = {
            "id": panel.device_id,
            "kind": "ip_unit",
            "channel": "dc09",
            "resident_id": panel.resident_id,
            "dc09_account": panel.account,
            "heartbeat_interval_s": 300,
        }
        if panel.key is not None:
            fields["dc09_key"] = panel.key
        await register_unit(registry, Resident(id=panel.resident_id, name=panel.name), fields)


def describe(listen: str) -> str:
    return f"  DC-09       {listen} (TCP and UDP): panels " + ", ".join(p.describe() for p in PANELS)


async def run_panels(host: str, port: int, every_s: float) -> None:
    """Until cancelled: each panel sends a link test every ~``every_s`` seconds, now and then an alarm
    instead; a frame that goes unanswered after the panel's resends is logged and the panel goes on."""
    async with AsyncExitStack() as stack:
        panels = [
            (
                spec,
                await stack.enter_async_context(
                    Dc09Panel(
                        host,
                        port,
                        account=spec.account,
                        key=parse_key(spec.key) if spec.key else None,
                        transport=spec.transport,
                    )
                ),
            )
            for spec in PANELS
        ]
        async with asyncio.TaskGroup() as tg:
            for spec, panel in panels:
                tg.create_task(_panel_life(spec, panel, every_s), name=f"demo-{spec.device_id}")


async def _panel_life(spec: DemoPanel, panel: Dc09Panel, every_s: float) -> None:
    codes, weights = zip(*ALARMS, strict=True)
    while True:
        await asyncio.sleep(random.expovariate(1 / every_s) + 1)
        alarm = random.choices(codes, weights)[0] if random.random() < ALARM_CHANCE else None
        what = f"Contact ID {alarm} ({ALARM_NAMES[alarm]})" if alarm is not None else "a link test"
        try:
            answer = await (panel.send_contact_id(alarm) if alarm is not None else panel.link_test())
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.warning("DC-09 panel %s: %s went unanswered: %s", spec.account, what, exc or "no answer")
            continue
        log.info("DC-09 panel %s (%s) sent %s -> %s", spec.account, spec.device_id, what, answer.token)
