"""How the MQTT link comes back from faults (issue 17), part by part; tests/chaos/ measures the whole.

- Retries of an event already stored are answered from memory, with the store's own answer (duplicate,
  the first delivery's alert id), never from memory for an event the store refused or never took.
- A CONNECT to a broker that accepted the connection fails as soon as that connection closes, not after
  the whole CONNACK timeout.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import aiomqtt
import pytest
from clock import SteppedClock
from harness import RunningBridge, free_port, unit_for

from bridge.transports.mqtt import CONNECT_TIMEOUT_S, Inbox
from bridge.transports.mqtt_client import BrokerClient
from bridge.transports.recent_acks import RecentAcks
from simulators.outages import HalfOpenBroker

pytestmark = pytest.mark.mosquitto


def test_recent_acks_remember_what_was_stored_and_forget_the_oldest() -> None:
    clock = SteppedClock(0.0)
    recent = RecentAcks(size=3, quiet_s=1.0, clock=clock)
    for n in range(4):
        recent.stored(("unit-1", f"ev-{n}"), f"alert-{n}")
    assert len(recent) == 3 and recent.lookup(("unit-1", "ev-0")) is None  # the oldest went first
    known = recent.lookup(("unit-1", "ev-1"))
    assert known is not None and known.alert_id == "alert-1" and not recent.just_acked(known)
    recent.stored(("unit-1", "ev-4"), None)  # ev-1 was just looked up: ev-2 is now the oldest
    assert recent.lookup(("unit-1", "ev-2")) is None and recent.lookup(("unit-1", "ev-1")) is not None
    recent.acked(("unit-1", "ev-1"))
    known = recent.lookup(("unit-1", "ev-1"))
    assert known is not None and known.alert_id == "alert-1" and recent.just_acked(known)
    clock.advance(1.0)
    assert not recent.just_acked(known)
    recent.acked(("unit-9", "never-stored"))  # an ack of an unknown event is no entry
    assert recent.lookup(("unit-9", "never-stored")) is None


def test_recent_acks_leave_nothing_for_full_collections_to_walk() -> None:
    """A full memory is 32,768 entries: kept as objects the garbage collector tracks, every full
    collection walked them all (15-24 ms each in the soak). Entries of plain strings and floats are
    untracked at their first young collection."""
    recent = RecentAcks(size=1000)
    for n in range(1000):
        recent.stored(("unit-1", f"ev-{n}"), None if n % 2 else f"alert-{n}")
        recent.acked(("unit-1", f"ev-{n}"))
    gc.collect()
    tracked = sum(1 for o in gc.get_objects() if isinstance(o, tuple) and o and o[0] == "unit-1")
    ours = "bridge.transports.recent_acks"
    entries = [e for e in gc.get_objects() if type(e).__module__ == ours and e is not recent]
    assert tracked == 0 and entries == []
    assert len(recent) == 1000 and gc.is_tracked(recent._stored)  # only the memory itself


async def test_a_retry_of_a_stored_event_is_answered_without_the_store(
    bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with unit_for(bridge, "unit-again") as unit:
        first = await unit.send("pendant", event_id="ev-1", timeout=20)
        assert first["result"] == "accepted"
        asked: list[int] = []
        real = bridge.bridge.intake.submit_many

        async def counting(events: Any) -> Any:  # the fault: every store call is seen
            asked.append(len(events))
            return await real(events)

        monkeypatch.setattr(bridge.bridge.intake, "submit_many", counting)
        again = await unit.send("pendant", event_id="ev-1", timeout=20)
        assert again == {**first, "result": "duplicate"}  # the wire contract's answer, same alert
        assert asked == []  # from memory
        fresh = await unit.send("pendant", event_id="ev-2", timeout=20)  # a new event still goes to the store
        assert fresh["result"] == "accepted" and fresh["alert_id"] == first["alert_id"] and asked == [1]
    assert await bridge.store.event_count() == 2


async def test_a_refused_event_is_not_remembered(bridge: RunningBridge) -> None:
    async with unit_for(bridge, "unit-bad") as unit:
        for _ in range(2):  # refused each time, by the codec: nothing stored, nothing remembered
            ack = await unit.send("no-such-type", event_id="ev-x", timeout=20)
            assert ack["result"] == "rejected"
    assert bridge.bridge.mqtt.recent.lookup(("unit-bad", "ev-x")) is None
    assert await bridge.store.event_count() == 0


async def test_a_connect_fails_as_soon_as_the_broker_drops_it() -> None:
    """A hung broker (accepts, never answers CONNACK) that dies: the attempt ends then, not after
    CONNECT_TIMEOUT_S -- the half-open experiment waited 5 s for it before this."""
    port = free_port()
    hung = HalfOpenBroker(port)
    await hung.start()
    client = BrokerClient("127.0.0.1", port, identifier="half-open", timeout=CONNECT_TIMEOUT_S)

    async def die_soon() -> None:
        await hung.until(lambda broker: broker.bytes_read > 0)  # the CONNECT is in: the broker goes away
        await hung.close()

    dying = asyncio.create_task(die_soon())
    started = time.monotonic()
    with pytest.raises(aiomqtt.MqttError, match="closed before CONNACK"):
        async with client:
            pass
    took = time.monotonic() - started
    await dying
    assert hung.accepted == 1
    assert took < CONNECT_TIMEOUT_S / 2, f"the attempt took {took:.2f} s"


async def test_a_connect_that_times_out_closes_its_socket() -> None:
    port = free_port()
    hung = HalfOpenBroker(port)
    await hung.start()
    try:
        client = BrokerClient("127.0.0.1", port, identifier="half-open", timeout=0.3)
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                pass
        async with asyncio.timeout(5):  # the attempt's socket is closed, so the broker sees it go
            await hung.until(lambda broker: not broker.open_connections)
    finally:
        await hung.close()


def message(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)


def test_a_copy_of_an_event_already_waiting_is_dropped_on_arrival() -> None:
    inbox = Inbox()
    event = b'{"event_id": "ev-1", "type": "low_battery"}'
    for _ in range(5):  # a unit's retries while acks are behind
        inbox.put_nowait(message("t/v1/unit-1/event", event))
    inbox.put_nowait(message("t/v1/unit-1/alarm", b'{"event_id": "ev-2", "type": "fall"}'))
    inbox.put_nowait(message("t/v1/unit-2/event", event))  # another unit's event: not a copy
    inbox.put_nowait(
        message("t/v1/unit-1/event", b'{"event_id": "ev-1", "type": "low_battery", "test": true}')
    )
    assert inbox.qsize() == 4 and inbox.coalesced == 4
    first = inbox.get_nowait()
    assert first.topic.value == "t/v1/unit-1/event" and first.payload == event
    inbox.put_nowait(message("t/v1/unit-1/event", event))  # once taken, a new copy is handled again
    assert inbox.qsize() == 4


def test_statuses_never_coalesce() -> None:
    """online, offline, online: the last word is the unit's state, so each is kept in order."""
    inbox = Inbox()
    for word in (b"online", b"offline", b"online"):
        inbox.put_nowait(message("t/v1/unit-1/status", word))
    assert [inbox.get_nowait().payload for _ in range(3)] == [b"online", b"offline", b"online"]
