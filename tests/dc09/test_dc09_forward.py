"""Forwarding to an upstream monitoring centre on a real bridge: pysiaalarm (PyPI) as the centre,
receiving alerts raised over MQTT (real Mosquitto) and by voice; both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from forward_support import PysiaCentre, forward_env
from harness import RunningBridge, eventually, make_config, running_bridge

from simulators.unit import SimulatedUnit

pytestmark = pytest.mark.mosquitto

PATH_ACCOUNT = "C0FFEE"
RESIDENT_ACCOUNT = "1A2B3C"


def unit_for(bridge: RunningBridge, device_id: str) -> SimulatedUnit:
    host, port = bridge.broker
    return SimulatedUnit(
        device_id, host=host, port=port, topic_root=bridge.bridge.config.topic_root, answer_commands=False
    )


async def timeline(bridge: RunningBridge, alert_id: str) -> list[dict[str, Any]]:
    status, body = await bridge.call("GET", f"/api/v1/alerts/{alert_id}")
    assert status == 200, body
    entries: list[dict[str, Any]] = body["timeline"]
    return entries


@pytest.fixture
async def centre() -> AsyncIterator[PysiaCentre]:
    peer = PysiaCentre({PATH_ACCOUNT: None, RESIDENT_ACCOUNT: None})
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


async def test_a_pendant_over_mqtt_reaches_the_centre(
    tmp_path: Path, mosquitto: tuple[str, int], topic_root: str, store_url: str, centre: PysiaCentre
) -> None:
    host, port = mosquitto
    config = make_config(
        tmp_path,
        mqtt_url=f"mqtt://{host}:{port}",
        topic_root=topic_root,
        TELECARE_STORE__URL=store_url,
        **forward_env({"url": centre.url, "account": PATH_ACCOUNT}),
    )
    async with running_bridge(config) as bridge:
        async with unit_for(bridge, "unit-ada") as unit:
            ack = await unit.send("pendant", timeout=20)

        async def heard() -> bool:
            return len(centre.messages()) == 1

        await eventually(heard)
        [event] = centre.messages()
        assert (event.account, event.code, event.message_type.value) == (PATH_ACCOUNT, "QA", "ADM-CID")
        print(event, event.x_data, event.extended_data)

        async def acked() -> bool:
            return "forward_acked" in [e["action"] for e in await timeline(bridge, ack["alert_id"])]

        await eventually(acked)
        print(await timeline(bridge, ack["alert_id"]))
