"""The bridge's MQTT client (:mod:`bridge.transports.mqtt_client`): acks as futures, and the packets of
one turn written in one ``send`` -- against the real broker, a broker that never confirms, and paho-mqtt's
own write queue."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from harness import MOSQUITTO_HOST, MOSQUITTO_PORT, free_port
from hypothesis import given
from hypothesis import strategies as st

from bridge.transports.mqtt_client import COALESCE_BYTES, BrokerClient, coalesce


def packet(command: int, body: bytes, *, qos: int = 1, pos: int = 0) -> dict[str, Any]:
    return {
        "command": command,
        "mid": 7,
        "qos": qos,
        "pos": pos,
        "to_process": len(body) - pos,
        "packet": body,
        "info": None,
    }


def unwritten(queue: deque[Any]) -> bytes:
    return b"".join(bytes(p["packet"][p["pos"] :]) for p in queue)


def test_plain_packets_are_joined_into_one_and_a_qos0_publish_or_disconnect_stays_alone() -> None:
    queue = deque(
        [
            packet(paho.PUBLISH | 2, b"ack-1", pos=2),  # partly written: joins from where it stopped
            packet(paho.PUBACK, b"puback"),
            packet(paho.PUBLISH | 2, b"ack-2"),
            packet(paho.PUBLISH, b"qos0", qos=0),
            packet(paho.PUBACK, b"after"),
            packet(paho.DISCONNECT, b"bye"),
        ]
    )
    before = unwritten(queue)
    assert coalesce(queue) == 3
    assert [p["packet"] for p in queue] == [b"k-1pubackack-2", b"qos0", b"after", b"bye"]
    assert queue[0]["command"] == paho.PUBACK and queue[0]["to_process"] == len(b"k-1pubackack-2")
    assert unwritten(queue) == before
    queue.popleft()
    queue.popleft()  # the QoS 0 publish written: what follows it is joined next time, up to DISCONNECT
    assert coalesce(queue) == 0 and [p["packet"] for p in queue] == [b"after", b"bye"]


def test_one_packet_or_none_is_left_as_it_is() -> None:
    alone = packet(paho.PUBACK, b"x")
    queue: deque[Any] = deque([alone])
    assert coalesce(queue) == 0 and list(queue) == [alone]
    empty: deque[Any] = deque()
    assert coalesce(empty) == 0 and not empty


def test_a_join_stops_at_its_size_limit() -> None:
    body = b"p" * (COALESCE_BYTES // 4)
    queue = deque(packet(paho.PUBACK, body) for _ in range(10))
    joined = coalesce(queue)
    assert joined == 4 and len(queue) == 7 and len(queue[0]["packet"]) == COALESCE_BYTES


commands = st.sampled_from([paho.PUBACK, paho.PUBLISH | 2, paho.PUBLISH, paho.PINGREQ, paho.DISCONNECT])


@given(st.lists(st.tuples(commands, st.binary(min_size=1, max_size=300), st.integers(0, 2)), max_size=30))
def test_joining_never_changes_the_bytes_written_nor_what_paho_acts_on(
    packets: list[tuple[int, bytes, int]],
) -> None:
    queue = deque(packet(command, body, qos=qos) for command, body, qos in packets)
    special = [
        p
        for p in queue
        if p["command"] == paho.DISCONNECT or (p["command"] == paho.PUBLISH and p["qos"] == 0)
    ]
    before = unwritten(queue)
    coalesce(queue)
    assert unwritten(queue) == before
    assert [p for p in queue if any(p is s for s in special)] == special  # the same objects, in order


@pytest.mark.mosquitto
async def test_acks_queued_in_one_turn_go_out_in_fewer_sends_and_all_are_confirmed() -> None:
    topic = f"test/coalesce/{uuid.uuid4().hex[:8]}"
    count = 200
    async with (
        aiomqtt.Client(MOSQUITTO_HOST, MOSQUITTO_PORT, identifier=f"reader-{uuid.uuid4().hex[:8]}") as reader,
        BrokerClient(MOSQUITTO_HOST, MOSQUITTO_PORT, identifier=f"acker-{uuid.uuid4().hex[:8]}") as acker,
    ):
        await reader.subscribe(topic, qos=1)
        sends: list[int] = []
        real_send = acker._client._sock_send

        def counted(buf: bytes | bytearray) -> int:  # observes paho-mqtt's writes, changes nothing
            sends.append(len(buf))
            return real_send(buf)

        acker._client._sock_send = counted  # type: ignore[method-assign]
        confirmed = [acker.publish_ack(topic, f"ack-{n}".encode(), timeout=30) for n in range(count)]
        async with asyncio.timeout(30):
            await asyncio.gather(*confirmed)
            received = [bytes(m.payload) async for m in _take(reader, count)]  # type: ignore[arg-type]
    assert received == [f"ack-{n}".encode() for n in range(count)]  # every ack, in order
    # Without joining, a send per ack; paho-mqtt keeps at most 20 unconfirmed, so at least 10.
    assert 0 < len(sends) < count / 5, sends
    assert acker._acks == {}


async def _take(client: aiomqtt.Client, count: int) -> Any:
    n = 0
    async for message in client.messages:
        yield message
        n += 1
        if n == count:
            return


class SilentBroker:
    """Answers CONNECT with CONNACK (MQTT 3.1.1) and then never confirms anything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.connections: list[asyncio.StreamWriter] = []
        self.publishes = asyncio.Event()

    async def __aenter__(self) -> SilentBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.drop()
        await self.server.wait_closed()

    def drop(self) -> None:
        for writer in self.connections:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        await reader.read(1)  # the CONNECT
        writer.write(b"\x20\x02\x00\x00")
        while data := await reader.read(4096):
            if data[0] & 0xF0 == paho.PUBLISH:
                self.publishes.set()


async def test_an_ack_never_confirmed_fails_after_its_timeout() -> None:
    async with (
        SilentBroker() as broker,
        BrokerClient("127.0.0.1", broker.port, identifier="silent") as client,
    ):
        confirmed = client.publish_ack("t/ack", b"x", timeout=0.2)
        with pytest.raises(aiomqtt.MqttError, match=r"no PUBACK within 0\.2 s"):
            async with asyncio.timeout(10):
                await confirmed
        assert broker.publishes.is_set() and client._acks == {}


async def test_acks_waiting_fail_as_soon_as_the_connection_ends() -> None:
    async with SilentBroker() as broker:
        client = BrokerClient("127.0.0.1", broker.port, identifier="silent")
        with pytest.raises(aiomqtt.MqttError):
            async with client:
                confirmed = [client.publish_ack("t/ack", b"x", timeout=60) for _ in range(3)]
                async with asyncio.timeout(10):
                    await broker.publishes.wait()
                broker.drop()
                done, _ = await asyncio.wait(confirmed, timeout=10)
                assert done == set(confirmed)
                for ack in confirmed:
                    with pytest.raises(aiomqtt.MqttError, match="connection ended"):
                        ack.result()
                assert client._acks == {}
                await client._disconnected  # aiomqtt's own end of the connection, raised on exit


async def test_an_ack_on_a_client_not_connected_is_refused_at_once() -> None:
    client = BrokerClient("127.0.0.1", free_port(), identifier="never-connected")
    with pytest.raises(aiomqtt.MqttError):
        client.publish_ack("t/ack", b"x", timeout=1)
