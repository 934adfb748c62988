"""A cancelled task ends: the hang behind the flaky embedded-broker test, and its siblings.

On Python 3.11 ``asyncio.wait_for`` (which aiomqtt awaits for every publish confirmation) returns the
result and drops the cancellation when both land in one loop turn. These tests make them land together
on purpose, so the race that hung ``test_embedded_broker_carries_the_same_path`` about 1 run in 15
happens every run.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from devices.cancellation import stop
from simulators.unit import SimulatedUnit


class ConfirmingClient:
    """Stands in for aiomqtt.Client where the fault is injected: publish waits for the broker's
    confirmation in ``asyncio.wait_for``, exactly as aiomqtt 2.x does."""

    def __init__(self) -> None:
        self.confirmation = asyncio.Event()
        self.publishing = asyncio.Event()
        self.publishes = 0

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.publishes += 1
        self.publishing.set()
        await asyncio.wait_for(self.confirmation.wait(), timeout=10)


async def ended(task: asyncio.Task[Any], within: float = 5.0) -> bool:
    done, _ = await asyncio.wait({task}, timeout=within)
    return bool(done)


async def test_the_race_does_lose_a_cancellation_in_wait_for() -> None:
    """The premise: if this ever fails, Python fixed gh-86296 and the checks below are belt and braces."""
    client = ConfirmingClient()
    publishing = asyncio.create_task(client.publish("t", b""))
    async with asyncio.timeout(5):
        await client.publishing.wait()
    client.confirmation.set()
    publishing.cancel()
    assert await ended(publishing)
    assert not publishing.cancelled(), "wait_for returned the result and lost the cancellation"
    assert publishing.cancelling() == 1, "yet the task still counts the request"


async def test_a_cancelled_send_ends_even_when_its_publish_is_confirmed_at_that_moment() -> None:
    unit = SimulatedUnit("unit-race", retry_initial_s=0.01, retry_max_s=0.01)
    client = ConfirmingClient()
    unit._client = client  # type: ignore[assignment]
    sending = asyncio.create_task(unit.send("pendant"))
    async with asyncio.timeout(5):
        await client.publishing.wait()
    client.confirmation.set()
    sending.cancel()  # lands in the same loop turn as the confirmation
    assert await ended(sending), f"send kept retrying after its cancellation ({client.publishes} publishes)"
    assert sending.cancelled()


async def test_leaving_the_unit_ends_a_command_answer_caught_in_the_race() -> None:
    """What hung the embedded-broker test: __aexit__ cancels the task answering ``call_centre``."""
    unit = SimulatedUnit("unit-exit", retry_initial_s=0.01, retry_max_s=0.01)
    client = ConfirmingClient()
    unit._client = client  # type: ignore[assignment]
    unit._on_message(
        "telecare/v1/unit-exit/cmd", b'{"cmd_id": "c1", "cmd": "call_centre", "args": {"alert_id": "a1"}}'
    )
    async with asyncio.timeout(5):
        await client.publishing.wait()
    client.confirmation.set()
    leaving = asyncio.create_task(unit.__aexit__(None, None, None))
    assert await ended(leaving), "__aexit__ never returned"
    leaving.result()


async def test_stop_passes_on_a_cancellation_of_its_caller() -> None:
    """``with suppress(CancelledError): await task`` after ``task.cancel()`` would swallow this one."""
    running, cleanup_started = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        finally:
            cleanup_started.set()
            await asyncio.shield(asyncio.Event().wait())  # a cleanup that outlasts the caller's patience

    worker = asyncio.create_task(slow_to_stop())
    async with asyncio.timeout(5):
        await running.wait()
    owner = asyncio.create_task(stop(worker))
    async with asyncio.timeout(5):
        await cleanup_started.wait()
    owner.cancel()
    assert await ended(owner)
    assert owner.cancelled()
    worker.cancel()


async def test_stop_re_raises_a_failure_that_is_not_the_cancellation() -> None:
    running = asyncio.Event()

    async def fails_on_cancel() -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    worker = asyncio.create_task(fails_on_cancel())
    async with asyncio.timeout(5):
        await running.wait()
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await stop(worker)


class RacingBrokerClient:
    """Stands in for aiomqtt.Client where the fault is injected: subscribe waits for SUBACK in
    ``asyncio.wait_for``, as aiomqtt does; no message ever arrives, and the connection never ends."""

    def __init__(self) -> None:
        self.suback = asyncio.Event()
        self.subscribing = asyncio.Event()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # never ends

    async def __aenter__(self) -> RacingBrokerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, topic: str, qos: int = 0, timeout: float | None = None) -> None:
        self.subscribing.set()
        await asyncio.wait_for(self.suback.wait(), timeout=10)


async def test_the_bridge_mqtt_link_stops_when_a_subscribe_is_confirmed_at_the_cancellation() -> None:
    """Without the check the link would go on to serve, and the bridge's shutdown would wait forever."""
    from bridge.metrics import BridgeMetrics
    from bridge.transports.mqtt import BrokerAddress, MqttLink
    from devices.mqtt_codec import Topics

    client = RacingBrokerClient()
    link = MqttLink(
        broker=BrokerAddress("127.0.0.1", 1),
        topics=Topics("telecare"),
        intake=None,  # type: ignore[arg-type]  # no message arrives
        metrics=BridgeMetrics("test-node"),
        client_id="race",
    )
    link._make_client = lambda lane, inbox: client  # type: ignore[assignment,method-assign,return-value]
    running = asyncio.create_task(link.run())
    async with asyncio.timeout(5):
        await client.subscribing.wait()
    client.suback.set()
    running.cancel()  # lands in the same loop turn as the SUBACK
    assert await ended(running), "the link kept serving after its cancellation"
    assert running.cancelled()


async def test_a_unit_cancelled_while_it_connects_leaves_no_connection_loop_behind() -> None:
    """A demo stopped (Ctrl-C) while its units connect: the unit's connection loop ends too, instead of
    being left to ``asyncio.run``'s final cancellation (where a lost cancellation would hang it)."""
    with socket.socket() as closed:  # a port nothing listens on: the unit keeps retrying
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unit = SimulatedUnit("unit-connecting", port=port)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):  # cancelled at its first wait: for its connection loop
            await unit.__aenter__()
    assert unit._runner is not None, "the start made its connection loop before it was cancelled"
    left = [t for t in asyncio.all_tasks() if t.get_name() == "unit-unit-connecting" and not t.done()]
    assert left == [], "the unit's connection loop outlived its cancelled start"
