"""The demo fleet: a few residents' units that press pendants, fall, run low on battery and heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass

from simulators.unit import SimulatedUnit

log = logging.getLogger(__name__)

DEMO_RESIDENTS = [
    ("res-ada", "Ada Lovelace", "unit-ada"),
    ("res-bill", "Bill Tutte", "unit-bill"),
    ("res-grace", "Grace Hopper", "unit-grace"),
    ("res-karen", "Karen Sparck Jones", "unit-karen"),
    ("res-tommy", "Tommy Flowers", "unit-tommy"),
    ("res-mary", "Mary Somerville", "unit-mary"),
]

#: Relative weights of what a demo unit does next.
BEHAVIOUR = [
    ("pendant", 4),
    ("fall", 2),
    ("low_battery", 2),
    ("mains_fail", 1),
    ("mains_restored", 1),
    ("door_exit", 1),
]


@dataclass
class FleetStats:
    sent: int = 0
    acked: int = 0


async def run_fleet(
    device_ids: list[str],
    *,
    host: str,
    port: int,
    topic_root: str = "telecare",
    every_s: float = 20.0,
    heartbeat_s: float = 60.0,
    stats: FleetStats | None = None,
) -> None:
    """Run units until cancelled, each doing something now and then."""
    stats = stats or FleetStats()
    async with AsyncExitStack() as stack:
        units = [
            await stack.enter_async_context(
                SimulatedUnit(d, host=host, port=port, topic_root=topic_root, heartbeat_s=heartbeat_s)
            )
            for d in device_ids
        ]
        types = [t for t, _ in BEHAVIOUR]
        weights = [w for _, w in BEHAVIOUR]

        async def act(unit: SimulatedUnit) -> None:
            await asyncio.sleep(random.uniform(1, every_s))
            while True:
                event_type = random.choices(types, weights)[0]
                stats.sent += 1
                with contextlib.suppress(TimeoutError):
                    ack = await unit.send(event_type, timeout=120)
                    stats.acked += 1
                    log.info(
                        "%s sent %s -> %s (alert %s)",
                        unit.device_id,
                        event_type,
                        ack["result"],
                        ack.get("alert_id"),
                    )
                await asyncio.sleep(random.expovariate(1 / every_s) + 2)

        async with asyncio.TaskGroup() as tg:
            for unit in units:
                tg.create_task(act(unit), name=f"demo-{unit.device_id}")
