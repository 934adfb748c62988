"""The demo fleet: a few residents' units that press pendants, fall, run low on battery and heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

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

#: What the console shows on each demo resident's card (the registry's resident fields).
DEMO_DETAILS: dict[str, dict[str, object]] = {
    "res-ada": {
        "address": "12 St James's Square, London SW1Y 4JH",
        "key_safe": "left of the door, code 1815",
        "medical_notes": "Multiple sclerosis; cannot press a pendant reliably. Uses voice.",
        "language": "en-GB",
        "responders": [
            {"name": "Byron King (son)", "phone": "+447700900101"},
            {"name": "Mary Somerville (neighbour)", "phone": "+447700900102"},
        ],
    },
    "res-bill": {
        "address": "3 Bletchley Road, Milton Keynes MK3 6EB",
        "key_safe": "none: neighbour holds a key",
        "medical_notes": "Type 2 diabetes. Falls risk after dark.",
        "language": "en-GB",
        "responders": [{"name": "Dorothy Tutte (daughter)", "phone": "+447700900201"}],
    },
    "res-grace": {
        "address": "8 Harbour Lane, Plymouth PL1 2AA",
        "key_safe": "behind the gate, code 1906",
        "medical_notes": "COPD, home oxygen: no naked flames.",
        "language": "en-GB",
        "responders": [{"name": "Vincent Hopper (son)", "phone": "+447700900301"}],
    },
    "res-karen": {
        "address": "21 Mill Road, Cambridge CB1 2AD",
        "key_safe": "by the back door, code 1935",
        "medical_notes": "Epilepsy: seizures at night.",
        "language": "cy",
        "responders": [{"name": "Roger Needham (husband)", "phone": "+447700900401"}],
    },
    "res-tommy": {
        "address": "5 Dollis Hill Lane, London NW2 6HR",
        "key_safe": "right of the door, code 1943",
        "medical_notes": "Heart failure; lives alone.",
        "language": "en-GB",
        "responders": [{"name": "Ethel Flowers (sister)", "phone": "+447700900501"}],
    },
    "res-mary": {
        "address": "4 Chelsea Walk, London SW3 5AA",
        "key_safe": "porch, code 1780",
        "medical_notes": "Partially sighted.",
        "language": "en-GB",
        "responders": [{"name": "Woronzow Greig (son)", "phone": "+447700900601"}],
    },
}


class DemoRegistry(Protocol):
    """What the demo seeds register through (``store.devices`` has them; they validate what they store)."""

    async def upsert_resident(
        self, resident_id: str, name: str, data: dict[str, Any] | None = None
    ) -> None: ...

    async def upsert_device(self, device_id: str, kind: str, *, resident_id: str | None = None) -> None: ...


async def seed_demo(store: DemoRegistry, units: int = len(DEMO_RESIDENTS)) -> list[str]:
    """Register the first ``units`` demo residents, their details and GSM units; returns the unit ids.

    The one way the demo (``telecare-bridge demo``, the console screenshot) registers its fleet, so a
    test of it covers what the demo stores.
    """
    unit_ids = []
    for resident_id, name, unit_id in DEMO_RESIDENTS[:units]:
        await store.upsert_resident(resident_id, name, dict(DEMO_DETAILS.get(resident_id, {})))
        await store.upsert_device(unit_id, "gsm_unit", resident_id=resident_id)
        unit_ids.append(unit_id)
    return unit_ids


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
    passwords: dict[str, str] | None = None,
    alarm_lane: bool = True,
) -> None:
    """Run units until cancelled, each doing something now and then. A unit with an entry in
    ``passwords`` signs in to the broker as itself (username = device id); others connect anonymously.
    Calls for help go on the v1.1 ``alarm`` topic unless ``alarm_lane`` is false (v1.0 units)."""
    stats = stats or FleetStats()
    passwords = passwords or {}
    async with AsyncExitStack() as stack:
        units = [
            await stack.enter_async_context(
                SimulatedUnit(
                    d,
                    host=host,
                    port=port,
                    topic_root=topic_root,
                    heartbeat_s=heartbeat_s,
                    username=d if d in passwords else None,
                    password=passwords.get(d),
                    alarm_lane=alarm_lane,
                )
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
