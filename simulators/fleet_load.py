"""A fleet of telecare units as load: hundreds of units on a few MQTT connections, for fault experiments.

Each unit behaves as the wire contract asks of a real one: it publishes an event at QoS 1 (calls for
help on the v1.1 ``alarm`` topic, the rest on ``event``) and publishes it again after ``retry_s`` (doubling
with each retry up to ``retry_max_s``; by default it does not grow) until
the bridge acks it, and again at once after its connection to the broker comes back. What the units saw
is kept for the experiment: when each event was first sent, every ack it got (time, result, alert id).

It speaks the wire format through the same codec as the bridge (``devices/mqtt_codec.py``); it does not
answer commands (the bridge's outbox keeps retrying them, which is load too). A unit gives up a CONNECT
that gets no CONNACK after ``connect_timeout_s`` (1 s), so after a hung broker the units' own reconnect
does not hide the bridge's.

    async with FleetLoad("127.0.0.1", 1883, topic_root="t", units=200, rate=100) as fleet:
        ...
        await fleet.wait_all_acked(timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Self

import aiomqtt

from devices.cancellation import cancel_requests, honour_cancellation, stop
from devices.mqtt_codec import Topics, decode_ack, encode_event

log = logging.getLogger(__name__)
#: paho's own lines for the fleet's connections: a broken connection is what the experiments stage.
_PAHO_LOG = logging.getLogger("simulators.fleet_load.mqtt")
_PAHO_LOG.setLevel(logging.CRITICAL)

#: What the fleet sends, with its share: mostly heartbeats, some technical alarms, a few calls for help.
TYPES = ("heartbeat", "low_battery", "pendant")
SHARES = (0.80, 0.15, 0.05)
#: Event types that go on the v1.1 alarm lane.
HELP = frozenset({"pendant"})

EventKey = tuple[str, str]


@dataclass
class Ack:
    at: float
    result: str
    alert_id: str | None


@dataclass
class SentEvent:
    """One event of one unit: when it was first published, last published, and the acks it got."""

    device_id: str
    event_id: str
    type: str
    first_at: float
    last_at: float = 0.0
    #: Seconds before the next retry (grows with each one, up to the fleet's retry_max_s).
    wait_s: float = 0.0
    publishes: int = 0
    acks: list[Ack] = field(default_factory=list)

    @property
    def acked_at(self) -> float | None:
        return self.acks[0].at if self.acks else None


class _Connection:
    """One MQTT connection that publishes for a share of the units."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client: aiomqtt.Client | None = None
        self.queue: asyncio.Queue[SentEvent] = asyncio.Queue()
        self.connected = asyncio.Event()


class FleetLoad:
    """``units`` units sending ``rate`` events a second in all over ``connections`` connections, plus one
    connection that hears every ack; an async context manager. :meth:`pause` stops new events and
    retries (an outage with no load), :meth:`resume` starts them again."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic_root: str,
        units: int = 200,
        rate: float = 100.0,
        retry_s: float = 1.0,
        retry_max_s: float | None = None,
        connections: int = 8,
        reconnect_s: float = 0.1,
        connect_timeout_s: float = 1.0,
        prefix: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self.topics = Topics(topic_root)
        self.prefix = prefix or f"u{uuid.uuid4().hex[:6]}"
        self.devices = [f"{self.prefix}-{n:05d}" for n in range(units)]
        self._owner = {device_id: n % connections for n, device_id in enumerate(self.devices)}
        self._rate = rate
        self._retry_s = retry_s
        self._retry_max_s = max(retry_s, retry_max_s or retry_s)
        self._reconnect_s = reconnect_s
        self._connect_timeout = connect_timeout_s
        self._connections = [_Connection(f"{self.prefix}-c{k}") for k in range(connections)]
        self._ack_connection = _Connection(f"{self.prefix}-acks")
        self._serial = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = asyncio.Event()
        self._acked = asyncio.Event()
        #: Every event sent, by (device_id, event_id); and those not acked yet.
        self.events: dict[EventKey, SentEvent] = {}
        self.pending: dict[EventKey, SentEvent] = {}
        #: Acks for events this fleet never sent (must stay empty).
        self.strays = 0
        self.publishes = 0

    async def __aenter__(self) -> Self:
        self._sending.set()
        self._tasks = [
            asyncio.create_task(self._hear_acks(), name="fleet-acks"),
            *(asyncio.create_task(self._publish_for(c), name=f"fleet-{c.name}") for c in self._connections),
            asyncio.create_task(self._generate(), name="fleet-generate"),
            asyncio.create_task(self._retry(), name="fleet-retry"),
        ]
        async with asyncio.timeout(30):
            await self._ack_connection.connected.wait()
            for connection in self._connections:
                await connection.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop(*self._tasks)

    # -- control -----------------------------------------------------------------------------------
    def pause(self) -> None:
        """No new events and no retries until :meth:`resume` (the units go quiet)."""
        self._sending.clear()

    def resume(self) -> None:
        self._sending.set()

    @property
    def paused(self) -> bool:
        return not self._sending.is_set()

    def stop_new(self) -> None:
        """No new events from now on; retries go on (to drain what is pending)."""
        self._rate = 0.0

    async def until(self, check: Callable[[], bool], timeout: float) -> bool:
        """Wait (re-checking after each ack) until ``check()`` holds; whether it does after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not check():
                    self._acked.clear()
                    await self._acked.wait()
        return check()

    async def wait_all_acked(self, timeout: float) -> bool:
        """Wait until every event sent is acked; False if some are still pending after ``timeout``."""
        return await self.until(lambda: not self.pending, timeout)

    # -- what the units saw ------------------------------------------------------------------------
    def acks(self) -> Iterator[Ack]:
        for event in self.events.values():
            yield from event.acks

    def first_ack_after(self, moment: float) -> float | None:
        """The first ack the fleet received after ``moment`` (monotonic), or None."""
        return min((a.at for a in self.acks() if a.at >= moment), default=None)

    def backlog_acked_at(self, moment: float) -> float | None:
        """When the last event sent before ``moment`` and not acked by then got its first ack (None: an
        event of that backlog is still not acked; ``moment`` itself when there was no backlog)."""
        latest = moment
        for event in self.events.values():
            if event.first_at >= moment:
                continue
            acked = event.acked_at
            if acked is None:
                return None
            latest = max(latest, acked)
        return latest

    # -- the units ---------------------------------------------------------------------------------
    def _connection_of(self, device_id: str) -> _Connection:
        return self._connections[self._owner[device_id]]

    def _topic(self, event: SentEvent) -> str:
        if event.type in HELP:
            return self.topics.alarm(event.device_id)
        return self.topics.event(event.device_id)

    def _client(self, connection: _Connection, clean: bool) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=connection.name,
            clean_session=clean,
            keepalive=10,
            timeout=self._connect_timeout,
            max_inflight_messages=1000,
            logger=_PAHO_LOG,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _hear_acks(self) -> None:
        connection = self._ack_connection
        cancels = cancel_requests()
        while True:
            try:
                # A persistent session: a broker with persistence keeps the acks sent while we reconnect.
                async with self._client(connection, clean=False) as client:
                    await client.subscribe(f"{self.topics.root}/v1/+/ack", qos=1, timeout=10)
                    honour_cancellation(cancels)
                    connection.connected.set()
                    async for message in client.messages:
                        self._on_ack(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                log.debug("fleet ack connection lost: %s", exc)
            finally:
                connection.connected.clear()
            honour_cancellation(cancels)
            await asyncio.sleep(self._reconnect_s)

    def _on_ack(self, topic: str, payload: object) -> None:
        now = time.monotonic()
        parts = topic.split("/")
        if len(parts) < 2 or not isinstance(payload, bytes | bytearray):
            return
        try:
            ack = decode_ack(bytes(payload))
        except (ValueError, UnicodeDecodeError):
            return
        key = (parts[-2], str(ack.get("event_id")))
        event = self.events.get(key)
        if event is None:
            self.strays += 1
            return
        alert_id = ack.get("alert_id")
        event.acks.append(Ack(now, str(ack.get("result")), None if alert_id is None else str(alert_id)))
        if ack.get("result") in ("accepted", "duplicate", "rejected"):
            self.pending.pop(key, None)
        self._acked.set()

    async def _publish_for(self, connection: _Connection) -> None:
        cancels = cancel_requests()
        while True:
            try:
                async with self._client(connection, clean=True) as client:
                    honour_cancellation(cancels)
                    connection.client = client
                    connection.connected.set()
                    # A unit that reconnects sends what is not acked yet at once.
                    if self._sending.is_set():
                        for event in list(self.pending.values()):
                            if self._connection_of(event.device_id) is connection:
                                connection.queue.put_nowait(event)
                    # The message iterator ends (raising) when the connection is lost: watched, so a
                    # lost connection is noticed while nothing is being sent, and its error is read.
                    watch = asyncio.create_task(self._until_lost(client))
                    try:
                        while True:
                            event = await self._next(connection, watch)
                            if (event.device_id, event.event_id) not in self.pending:
                                continue  # acked while it waited
                            event.last_at = time.monotonic()
                            event.publishes += 1
                            self.publishes += 1
                            payload = encode_event(event.event_id, event.type)
                            await client.publish(self._topic(event), payload, qos=1, timeout=10)
                            honour_cancellation(cancels)
                    finally:
                        watch.cancel()
                        await asyncio.wait([watch])
            except aiomqtt.MqttError as exc:
                log.debug("fleet connection %s lost: %s", connection.name, exc)
            finally:
                connection.client = None
                connection.connected.clear()
            honour_cancellation(cancels)
            await asyncio.sleep(self._reconnect_s)

    @staticmethod
    async def _until_lost(client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # a publisher subscribes to nothing: this waits for the loss
            pass

    @staticmethod
    async def _next(connection: _Connection, watch: asyncio.Task[None]) -> SentEvent:
        """The next event to send, or the watch's error if the connection is lost first."""
        getter = asyncio.ensure_future(connection.queue.get())
        try:
            await asyncio.wait({getter, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
                await asyncio.wait([getter])
        if getter.done() and not getter.cancelled():
            return getter.result()
        watch.result()
        raise aiomqtt.MqttError("connection lost")

    async def _generate(self) -> None:
        step = 0.02
        owed = 0.0
        while True:
            await self._sending.wait()
            await asyncio.sleep(step)
            if not self._sending.is_set():
                continue
            owed += self._rate * step
            while owed >= 1.0:
                owed -= 1.0
                device_id = random.choice(self.devices)
                event_type = random.choices(TYPES, SHARES)[0]
                event = SentEvent(
                    device_id, f"{self.prefix}-{next(self._serial)}", event_type, time.monotonic()
                )
                key = (device_id, event.event_id)
                self.events[key] = event
                self.pending[key] = event
                self._connection_of(device_id).queue.put_nowait(event)

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if not self._sending.is_set():
                continue
            now = time.monotonic()
            for event in list(self.pending.values()):
                wait = event.wait_s or self._retry_s
                if event.publishes and now - event.last_at >= wait:
                    event.wait_s = min(wait * 2, self._retry_max_s)
                    event.last_at = now  # not again before it is published or another wait passes
                    connection = self._connection_of(event.device_id)
                    if connection.connected.is_set():
                        connection.queue.put_nowait(event)
