"""A burst on the real broker: every event acked once, with at most ``ACK_WINDOW`` acks unconfirmed on
the connection at a time (paho-mqtt and aiomqtt walk every unconfirmed message per ack), and the
bridge's garbage-collector thresholds set for floods."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid

import aiomqtt
import pytest
from harness import MOSQUITTO_HOST, MOSQUITTO_PORT, RunningBridge, eventually

from bridge import service
from bridge.transports import mqtt as link_module

pytestmark = pytest.mark.mosquitto

BURST = 300


async def test_a_burst_is_acked_once_each_with_a_bounded_window(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = bridge.bridge.mqtt
    real = link._publish_ack
    in_flight = 0
    most = 0

    def confirmed(_: asyncio.Future[None]) -> None:
        nonlocal in_flight
        in_flight -= 1

    def counted(client: aiomqtt.Client | None, topic: str, payload: bytes) -> asyncio.Future[None]:
        nonlocal in_flight, most
        published = real(client, topic, payload)
        in_flight += 1
        most = max(most, in_flight)
        published.add_done_callback(confirmed)
        return published

    monkeypatch.setattr(link, "_publish_ack", counted)
    root = bridge.bridge.config.topic_root
    acks: dict[str, dict[str, str]] = {}
    async with aiomqtt.Client(
        MOSQUITTO_HOST, MOSQUITTO_PORT, identifier=f"burst-{uuid.uuid4().hex[:8]}"
    ) as c:
        await c.subscribe(f"{root}/v1/+/ack", qos=1)
        for k in range(BURST):
            body = json.dumps({"event_id": f"e{k}", "type": "mains_fail"}).encode()
            await c.publish(f"{root}/v1/burst-{k:04d}/event", body, qos=1)

        async def all_acked() -> bool:
            while len(acks) < BURST:
                message = await anext(c.messages)
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                assert body["event_id"] not in acks, "each event acked once"
                acks[body["event_id"]] = body
            return True

        await eventually(all_acked, timeout=60)
    assert {a["result"] for a in acks.values()} == {"accepted"}
    assert 1 < most <= link_module.ACK_WINDOW, most
    assert await bridge.store.event_count() == BURST


def test_the_bridge_collects_garbage_rarely_enough_for_a_flood(bridge: RunningBridge) -> None:
    assert gc.get_threshold() == service.GC_THRESHOLDS
